package httpfallback_test

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
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
	for path, want := range map[string]int{"/": 200, "/sub/f.txt": 200, "/sub/": 404, "/.env": 404, "/missing": 404} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		require.Equal(t, want, rec.Code, path)
	}
	_, err = httpfallback.Static(filepath.Join(dir, "nope"))
	require.Error(t, err)
}
