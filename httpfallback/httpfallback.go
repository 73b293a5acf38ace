// Package httpfallback holds what the HTTP side of a shared port needs: an
// http.Server with safe timeouts that also speaks HTTP/2 without TLS
// (h2c, prior knowledge and Upgrade), a reverse proxy that keeps
// X-Forwarded-For right, and a static directory.
package httpfallback

import (
	"fmt"
	"log/slog"
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

// Proxy returns a reverse proxy to target (an http or https URL). It sets
// X-Forwarded-For from the client's address, replacing what the client
// sent (which anyone can forge), and X-Forwarded-Host and -Proto.
func Proxy(target *url.URL) (http.Handler, error) {
	if target == nil || (target.Scheme != "http" && target.Scheme != "https") || target.Host == "" {
		return nil, fmt.Errorf("httpfallback: proxy target %v is not an http(s) URL with a host", target)
	}
	return &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.SetXForwarded()
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			slog.Warn("httpfallback: backend failed", "url", r.URL.String(), "err", err)
			http.Error(w, "bad gateway", http.StatusBadGateway)
		},
	}, nil
}

// Static serves the files under dir. Directory listings are off and dot
// files are not served, so that a directory of site files does not leak
// .git or .env.
func Static(dir string) (http.Handler, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("httpfallback: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("httpfallback: %s is not a directory", dir)
	}
	fs := http.FileServer(noListing{http.Dir(dir)})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, part := range strings.Split(path.Clean(r.URL.Path), "/") {
			if strings.HasPrefix(part, ".") {
				http.NotFound(w, r)
				return
			}
		}
		fs.ServeHTTP(w, r)
	}), nil
}

type noListing struct{ fs http.FileSystem }

// Open refuses directories without an index.html.
func (n noListing) Open(name string) (http.File, error) {
	f, err := n.fs.Open(name)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if st.IsDir() {
		idx, err := n.fs.Open(path.Join(name, "index.html"))
		if err != nil {
			f.Close()
			return nil, os.ErrNotExist
		}
		idx.Close()
	}
	return f, nil
}
