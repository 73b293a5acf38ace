// Package httpfallback holds what the HTTP side of a shared port needs: an
// http.Server with safe timeouts that also speaks HTTP/2 without TLS
// (h2c, prior knowledge and Upgrade), a reverse proxy that replaces
// whatever forwarding headers a client sends (X-Forwarded-For and
// X-Real-IP name the real peer only), and a static directory that no path
// or symbolic link leads out of (an os.Root).
package httpfallback

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path"
	"strings"
	"time"
)

// Timeouts of Server; long enough for real clients, short enough that
// idle or slow clients do not pile up.
const (
	ReadHeaderTimeout = 10 * time.Second
	IdleTimeout       = 120 * time.Second
	MaxHeaderBytes    = 64 << 10
)

// Server returns an http.Server for h with safe timeouts, serving HTTP/1.1
// and unencrypted HTTP/2 (h2c with prior knowledge, as curl
// --http2-prior-knowledge sends it) on the same listener.
func Server(h http.Handler) *http.Server {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		Protocols:         p,
		ErrorLog:          slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
	}
}

// Proxy returns a reverse proxy to target (an http or https URL).
//
// The backend sees the client as this proxy found it, never as the client
// claims to be: whatever forwarding headers the client sent are dropped
// (Forwarded, X-Real-IP, True-Client-IP, X-Client-IP, X-Cluster-Client-IP,
// CF-Connecting-IP, Fastly-Client-IP and every X-Forwarded-*, also when
// spelled with underscores, which CGI-style backends read as dashes),
// then X-Forwarded-For and X-Real-IP are set to the peer's IP address
// alone, X-Forwarded-Host to the Host asked for and X-Forwarded-Proto to
// http or https. Forwarded (RFC 7239) is not set.
//
// Proxy trusts no proxy in front of it: it is meant for the browsers that
// reach the shared port directly. If the peer address cannot be parsed,
// X-Forwarded-For and X-Real-IP are absent rather than guessed.
func Proxy(target *url.URL) (http.Handler, error) {
	if target == nil || (target.Scheme != "http" && target.Scheme != "https") || target.Host == "" {
		return nil, fmt.Errorf("httpfallback: proxy target %v is not an http(s) URL with a host", target)
	}
	return &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			dropForwarding(r.Out.Header)
			r.SetXForwarded() // X-Forwarded-For is the peer only: none is left to append to
			if ip, _, err := net.SplitHostPort(r.In.RemoteAddr); err == nil {
				r.Out.Header.Set("X-Real-Ip", ip)
			}
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			slog.Warn("httpfallback: backend failed", "url", r.URL.String(), "err", err)
			http.Error(w, "bad gateway", http.StatusBadGateway)
		},
	}, nil
}

// forwardingHeaders are the headers, lower case and with dashes, that
// claim who the client is or how it came; X-Forwarded-* are all dropped
// too.
var forwardingHeaders = map[string]bool{
	"forwarded":           true,
	"x-real-ip":           true,
	"true-client-ip":      true,
	"x-client-ip":         true,
	"x-cluster-client-ip": true,
	"cf-connecting-ip":    true,
	"fastly-client-ip":    true,
}

// dropForwarding deletes the forwarding headers h holds, whatever their
// case and whether written with dashes or underscores.
func dropForwarding(h http.Header) {
	for k := range h {
		n := strings.ToLower(strings.ReplaceAll(k, "_", "-"))
		if forwardingHeaders[n] || strings.HasPrefix(n, "x-forwarded-") {
			delete(h, k)
		}
	}
}

// Static serves the files under dir, and nothing outside it: dir is opened
// once as an os.Root, and every request is resolved inside that root, so
// that no path, ".." or symbolic link leads out of it (a link that would
// is served as not found; links that stay inside work). Directory listings
// are off (a directory is served only through its index.html) and dot
// files are not served, so that a directory of site files does not leak
// .git or .env.
//
// The handler holds the root's descriptor for as long as it lives; it is
// an io.Closer, and closing it releases the descriptor (requests then
// fail with 404).
func Static(dir string) (http.Handler, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("httpfallback: static directory: %w", err)
	}
	st, err := root.Stat(".")
	if err != nil {
		root.Close()
		return nil, fmt.Errorf("httpfallback: static directory: %w", err)
	}
	if !st.IsDir() { // OpenRoot takes only directories; be sure
		root.Close()
		return nil, fmt.Errorf("httpfallback: %s is not a directory", dir)
	}
	return &static{root: root, files: http.FileServerFS(rootFS{root.FS()})}, nil
}

type static struct {
	root  *os.Root
	files http.Handler
}

func (s *static) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for _, part := range strings.Split(path.Clean(r.URL.Path), "/") {
		if strings.HasPrefix(part, ".") {
			http.NotFound(w, r)
			return
		}
	}
	s.files.ServeHTTP(w, r)
}

// Close releases the directory's descriptor.
func (s *static) Close() error { return s.root.Close() }

// rootFS is the root's fs.FS, with directories refused unless they hold
// an index.html and every failure but a permission one reported as not
// found: a link out of the root (os.Root's "path escapes from parent")
// must look like no file at all, not like a server error.
type rootFS struct{ fsys fs.FS }

func (r rootFS) Open(name string) (fs.File, error) {
	f, err := r.fsys.Open(name)
	if err != nil {
		return nil, notFound(name, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, notFound(name, err)
	}
	if st.IsDir() {
		idx, err := r.fsys.Open(path.Join(name, "index.html"))
		if err != nil {
			f.Close()
			return nil, notFound(name, err)
		}
		idx.Close()
	}
	return f, nil
}

func notFound(name string, err error) error {
	if errors.Is(err, fs.ErrPermission) {
		return err
	}
	return &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
}
