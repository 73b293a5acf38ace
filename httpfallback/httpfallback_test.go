package httpfallback_test

import (
	"encoding/json"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ampmux/ampmux/httpfallback"
)

func TestProxySetsForwardedFor(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("X-Forwarded-For")+"|"+r.Header.Get("X-Forwarded-Proto")+"|"+r.URL.Path)
	}))
	defer backend.Close()
	u, _ := url.Parse(backend.URL)
	h, err := httpfallback.Proxy(u)
	require.NoError(t, err)
	front := httptest.NewServer(h)
	defer front.Close()
	req, _ := http.NewRequest("GET", front.URL+"/a/b", nil)
	req.Header.Set("X-Forwarded-For", "6.6.6.6") // forged: must not survive
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, "127.0.0.1|http|/a/b", string(body))

	_, err = httpfallback.Proxy(&url.URL{Scheme: "ftp", Host: "x"})
	require.Error(t, err)
}

func TestProxyBackendDown(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	h, err := httpfallback.Proxy(&url.URL{Scheme: "http", Host: addr})
	require.NoError(t, err)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	require.Equal(t, http.StatusBadGateway, rec.Code)
}

func TestStatic(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "index.html"), []byte("home"), 0o644))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "sub"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "sub", "f.txt"), []byte("file"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, ".env"), []byte("SECRET"), 0o644))
	h, err := httpfallback.Static(dir)
	require.NoError(t, err)
	t.Cleanup(func() { h.(io.Closer).Close() })
	for path, want := range map[string]int{"/": 200, "/sub/f.txt": 200, "/sub/": 404, "/sub": 404, "/.env": 404, "/missing": 404} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		require.Equal(t, want, rec.Code, path)
	}
	_, err = httpfallback.Static(filepath.Join(dir, "nope"))
	require.Error(t, err)
	_, err = httpfallback.Static(filepath.Join(dir, "index.html"))
	require.Error(t, err, "a file is not a site directory")
}

// No symbolic link leads out of the site directory, whether to a
// directory or to a file, relative or absolute; links that stay inside
// still work.
func TestStaticSymlinks(t *testing.T) {
	outside := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(outside, "secret.txt"), []byte("OUTSIDE SECRET"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(outside, "index.html"), []byte("OUTSIDE INDEX"), 0o644))
	site := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(site, "sub"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(site, "sub", "f.txt"), []byte("inside file"), 0o644))
	require.NoError(t, os.Mkdir(filepath.Join(site, "docs"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(site, "docs", "index.html"), []byte("inside index"), 0o644))
	links := map[string]string{
		"out-dir":         outside,
		"out-file":        filepath.Join(outside, "secret.txt"),
		"out-relative":    filepath.Join("..", filepath.Base(outside), "secret.txt"),
		"sub/out-up":      filepath.Join("..", "..", filepath.Base(outside)),
		"in-file":         filepath.Join("sub", "f.txt"),
		"in-dir":          "docs",
		"sub/in-sibling":  filepath.Join("..", "docs", "index.html"),
		"in-dir-no-index": "sub",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(site, filepath.FromSlash(name))); err != nil {
			t.Skipf("symbolic links: %v", err) // Windows without the privilege
		}
	}
	h, err := httpfallback.Static(site)
	require.NoError(t, err)
	t.Cleanup(func() { h.(io.Closer).Close() })
	tests := []struct {
		path string
		code int
		body string
	}{
		{"/out-dir/secret.txt", 404, ""},
		{"/out-dir/", 404, ""},
		{"/out-file", 404, ""},
		{"/out-relative", 404, ""},
		{"/sub/out-up/secret.txt", 404, ""},
		{"/sub/../../" + filepath.Base(outside) + "/secret.txt", 404, ""},
		{"/in-file", 200, "inside file"},
		{"/in-dir/", 200, "inside index"},
		{"/sub/in-sibling", 200, "inside index"},
		{"/in-dir-no-index/", 404, ""},
		{"/in-dir-no-index/f.txt", 200, "inside file"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", tt.path, nil))
			require.Equal(t, tt.code, rec.Code)
			require.NotContains(t, rec.Body.String(), "OUTSIDE")
			if tt.body != "" {
				require.Equal(t, tt.body, rec.Body.String())
			}
		})
	}
}

// Forwarding headers a client forges never reach the backend: it sees
// X-Forwarded-For and X-Real-IP naming the real peer only.
func TestProxyReplacesForwardingHeaders(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(r.Header)
	}))
	t.Cleanup(backend.Close)
	u, err := url.Parse(backend.URL)
	require.NoError(t, err)
	h, err := httpfallback.Proxy(u)
	require.NoError(t, err)
	front := httptest.NewServer(h)
	t.Cleanup(front.Close)
	frontHost := strings.TrimPrefix(front.URL, "http://")
	want := http.Header{
		"X-Forwarded-For":   {"127.0.0.1"},
		"X-Real-Ip":         {"127.0.0.1"},
		"X-Forwarded-Host":  {frontHost},
		"X-Forwarded-Proto": {"http"},
	}
	tests := []struct {
		name   string
		forged map[string][]string // sent as written, not canonicalised
	}{
		{"none", nil},
		{"X-Forwarded-For", map[string][]string{"X-Forwarded-For": {"6.6.6.6", "7.7.7.7, 8.8.8.8"}}},
		{"X-Real-IP", map[string][]string{"X-Real-IP": {"6.6.6.6"}}},
		{"Forwarded", map[string][]string{"Forwarded": {"for=6.6.6.6;proto=https;host=evil"}}},
		{"host and proto", map[string][]string{"X-Forwarded-Host": {"evil.example"}, "X-Forwarded-Proto": {"https"}}},
		{"other X-Forwarded-*", map[string][]string{"X-Forwarded-Port": {"443"}, "X-Forwarded-Server": {"evil"}, "X-Forwarded-Prefix": {"/admin"}}},
		{"other client-IP headers", map[string][]string{"True-Client-IP": {"6.6.6.6"}, "X-Client-IP": {"6.6.6.6"}, "CF-Connecting-IP": {"6.6.6.6"}}},
		{"lower case", map[string][]string{"x-forwarded-for": {"6.6.6.6"}, "x-real-ip": {"6.6.6.6"}}},
		{"underscores", map[string][]string{"X_Forwarded_For": {"6.6.6.6"}, "X_Real_IP": {"6.6.6.6"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest("GET", front.URL+"/x", nil)
			require.NoError(t, err)
			maps.Copy(req.Header, tt.forged)
			resp, err := front.Client().Do(req)
			require.NoError(t, err)
			t.Cleanup(func() { resp.Body.Close() })
			require.Equal(t, 200, resp.StatusCode)
			var got http.Header
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
			seen := http.Header{}
			for k, v := range got {
				n := strings.ToLower(strings.ReplaceAll(k, "_", "-"))
				if strings.HasPrefix(n, "x-forwarded-") || strings.HasSuffix(n, "-ip") || n == "forwarded" {
					seen[k] = v
				}
			}
			require.Equal(t, want, seen)
		})
	}
}
