package app_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"testing"

	"github.com/tokenbroker/tokenbroker/config"
)

// BenchmarkHotPath measures the two hot routes through the whole server
// handler as serve builds it: API-key check, scope check, broker and token
// cache on a real SQLite file, metrics, the audit trail (its writer
// running), and for the proxy a real loopback upstream behind the
// provider's api_base_url. The allocation counts are the ones
// BENCHMARKS.md reports ("Allocations per request"); the bare variants are
// the floor of the same work without tokenbroker: a handler writing the
// same bytes, and an http.Client GET of the upstream.
func BenchmarkHotPath(b *testing.B) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"items":[{"id":1,"name":"first"},{"id":2,"name":"second"}],"next":null}`)
	}))
	b.Cleanup(upstream.Close)
	h, key := hotPathApp(b, upstream.URL+"/api")

	b.Run("token", func(b *testing.B) { serveEach(b, h, "/v1/connections/c1/token", key) })
	b.Run("token-bare", func(b *testing.B) {
		// The same response bytes from a handler that does nothing else.
		req := httptest.NewRequest("GET", "/v1/connections/c1/token", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		body := w.Body.Bytes()
		bare := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			_, _ = w.Write(body)
		})
		b.ReportAllocs()
		for b.Loop() {
			w := httptest.NewRecorder()
			bare.ServeHTTP(w, req)
		}
	})
	b.Run("proxy", func(b *testing.B) { serveEach(b, h, "/v1/proxy/c1/v1/items?page=1", key) })
	// Over loopback HTTP, one client at a time: tokenbroker's handler and
	// a plain ReverseProxy with the same transport settings, each behind
	// its own net/http server. The difference is what tokenbroker adds
	// to a proxied call's latency, without the other processes that
	// tbbench proxy -c 1 shares the machine with.
	tb := httptest.NewServer(h)
	b.Cleanup(tb.Close)
	target, _ := url.Parse(upstream.URL)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	tr.ResponseHeaderTimeout = config.DefaultProxyTimeout
	rp := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) }, Transport: tr})
	b.Cleanup(rp.Close)
	for _, v := range []struct{ name, url, key string }{
		{"proxy-http", tb.URL + "/v1/proxy/c1/v1/items?page=1", key},
		{"revproxy-http", rp.URL + "/api/v1/items?page=1", "x"},
		{"token-http", tb.URL + "/v1/connections/c1/token", key},
	} {
		b.Run(v.name, func(b *testing.B) {
			c := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
			b.ReportAllocs()
			for b.Loop() {
				req, _ := http.NewRequest("GET", v.url, nil)
				req.Header.Set("Authorization", "Bearer "+v.key)
				resp, err := c.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
	b.Run("proxy-bare", func(b *testing.B) {
		// What any proxy costs at least: the upstream round trip over a
		// pooled keep-alive connection, body read.
		c := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
		u := upstream.URL + "/api/v1/items?page=1"
		b.ReportAllocs()
		for b.Loop() {
			req, _ := http.NewRequest("GET", u, nil)
			req.Header.Set("Authorization", "Bearer x")
			resp, err := c.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}

// hotPathApp builds the app as serve does, with one connection c1 whose
// provider's api_base_url is apiBase, and starts its audit writer.
func hotPathApp(b *testing.B, apiBase string) (http.Handler, string) {
	return benchApp(b, nil, apiBase, true)
}

// serveEach has h answer GET path with key once per iteration, through a
// recorder, failing on anything but 200.
func serveEach(b *testing.B, h http.Handler, path, key string) {
	req := httptest.NewRequest("GET", path, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
}
