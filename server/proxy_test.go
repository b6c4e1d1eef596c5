package server

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
)

func TestProxyInjectsTokenAndDropsCallerHeaders(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	access, _ := h.importConn("c1", provAcme, nil)
	hdr := http.Header{
		"Cookie":              {"session=caller-cookie"},
		"Proxy-Authorization": {"Basic Y2FsbGVyOnNlY3JldA=="},
		"Refresh-On":          {"401"},
		"X-Forwarded-For":     {"203.0.113.9"},
		"Forwarded":           {"for=203.0.113.9"},
		"X-Real-Ip":           {"203.0.113.9"},
		"X-Custom":            {"kept"},
		"Content-Type":        {"text/plain"},
	}
	r := h.do("POST", "/v1/proxy/c1/items/42?x=1&y=a%20b", h.tokensKey, "hello upstream", hdr)
	if r.status != http.StatusOK || string(r.body) != "hello upstream" || r.header.Get("X-Upstream") != "yes" {
		t.Fatalf("proxied answer: status %d body %q", r.status, r.body)
	}
	calls := h.upstream.calls()
	if len(calls) != 1 {
		t.Fatalf("upstream saw %d requests, want 1", len(calls))
	}
	c := calls[0]
	upHost := strings.TrimPrefix(h.upstream.URL, "http://")
	if c.Method != "POST" || c.URI != "/api/v2/items/42?x=1&y=a%20b" || c.Host != upHost {
		t.Errorf("upstream request %s %s host %s", c.Method, c.URI, c.Host)
	}
	if c.Header.Get("Authorization") != "Bearer "+access {
		t.Errorf("upstream did not get the connection's token (Authorization length %d)", len(c.Header.Get("Authorization")))
	}
	for _, name := range []string{"Cookie", "Proxy-Authorization", "Refresh-On", "X-Forwarded-For", "Forwarded", "X-Real-Ip", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		if v := c.Header.Values(name); len(v) > 0 {
			t.Errorf("upstream got the caller's %s header", name)
		}
	}
	if strings.Contains(strings.Join(c.Header.Values("Authorization"), " "), h.tokensKey) {
		t.Errorf("upstream got the caller's API key")
	}
	if c.Header.Get("X-Custom") != "kept" || c.Header.Get("Content-Type") != "text/plain" || string(c.Body) != "hello upstream" {
		t.Errorf("upstream request lost headers or body: X-Custom %q body %q", c.Header.Get("X-Custom"), c.Body)
	}
	if n := h.authz.RefreshCalls(); n != 0 {
		t.Errorf("refresh calls = %d, want 0", n)
	}
}

func TestProxyRefreshesAndReplaysOnce(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	access, _ := h.importConn("c1", provAcme, nil)
	h.upstream.rejectToken(access, http.StatusUnauthorized)

	body := strings.Repeat("payload-", 100)
	r := h.do("PATCH", "/v1/proxy/c1/things/1?v=2", h.tokensKey, body, http.Header{"X-Custom": {"same"}, "Content-Type": {"application/json"}})
	if r.status != http.StatusOK || string(r.body) != body {
		t.Fatalf("status %d, body length %d", r.status, len(r.body))
	}
	calls := h.upstream.calls()
	if len(calls) != 2 {
		t.Fatalf("upstream saw %d requests, want 2 (the 401 and one replay)", len(calls))
	}
	first, second := calls[0], calls[1]
	if first.Header.Get("Authorization") != "Bearer "+access {
		t.Errorf("first attempt did not carry the imported token")
	}
	newAuth := second.Header.Get("Authorization")
	if newAuth == "Bearer "+access || !strings.HasPrefix(newAuth, "Bearer ") {
		t.Errorf("replay did not carry a new token")
	}
	for _, c := range calls {
		if c.Method != "PATCH" || c.URI != "/api/v2/things/1?v=2" || c.Header.Get("X-Custom") != "same" ||
			c.Header.Get("Content-Type") != "application/json" || string(c.Body) != body {
			t.Errorf("attempt differs: %s %s X-Custom %q body length %d", c.Method, c.URI, c.Header.Get("X-Custom"), len(c.Body))
		}
	}
	if n := h.authz.RefreshCalls(); n != 1 {
		t.Errorf("refresh calls = %d, want 1", n)
	}
	// The next call uses the new token straight away.
	if r := h.do("GET", "/v1/proxy/c1/x", h.tokensKey, nil, nil); r.status != http.StatusOK {
		t.Errorf("next call: status %d", r.status)
	}
	if calls := h.upstream.calls(); len(calls) != 3 || calls[2].Header.Get("Authorization") != newAuth {
		t.Errorf("next call did not use the refreshed token directly")
	}
	if n := h.authz.RefreshCalls(); n != 1 {
		t.Errorf("refresh calls = %d after the next call, want 1", n)
	}
}

func TestProxyRefreshOn(t *testing.T) {
	t.Run("header", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		access, _ := h.importConn("c1", provAcme, nil)
		h.upstream.rejectToken(access, http.StatusForbidden)

		// Without the header, 403 is not a refresh status: passed through.
		r := h.do("GET", "/v1/proxy/c1/x", h.tokensKey, nil, nil)
		if r.status != http.StatusForbidden || h.authz.RefreshCalls() != 0 || len(h.upstream.calls()) != 1 {
			t.Fatalf("without Refresh-On: status %d, refreshes %d, upstream calls %d", r.status, h.authz.RefreshCalls(), len(h.upstream.calls()))
		}
		r = h.do("GET", "/v1/proxy/c1/x", h.tokensKey, nil, http.Header{"Refresh-On": {"401, 403"}})
		if r.status != http.StatusOK || h.authz.RefreshCalls() != 1 || len(h.upstream.calls()) != 3 {
			t.Errorf("with Refresh-On 403: status %d, refreshes %d, upstream calls %d", r.status, h.authz.RefreshCalls(), len(h.upstream.calls()))
		}
	})
	t.Run("provider refresh_on", func(t *testing.T) {
		h := newHarness(t, harnessOptions{server: func(o *Options) {
			tgt := o.Targets[provAcme]
			tgt.RefreshOn = []int{403}
			o.Targets[provAcme] = tgt
		}})
		access, _ := h.importConn("c1", provAcme, nil)
		h.upstream.rejectToken(access, http.StatusForbidden)
		r := h.do("GET", "/v1/proxy/c1/x", h.tokensKey, nil, nil)
		if r.status != http.StatusOK || h.authz.RefreshCalls() != 1 {
			t.Errorf("refresh_on [403]: status %d, refreshes %d", r.status, h.authz.RefreshCalls())
		}
	})
	t.Run("invalid header", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		h.importConn("c1", provAcme, nil)
		for _, v := range []string{"200", "abc", "401,500", "4010", ",", "99", "401;403"} {
			r := h.do("GET", "/v1/proxy/c1/x", h.tokensKey, nil, http.Header{"Refresh-On": {v}})
			if code, msg := r.errCode(t); r.status != http.StatusBadRequest || code != codeInvalidRequest || !strings.Contains(msg, "Refresh-On") {
				t.Errorf("Refresh-On %q: %d %q %q", v, r.status, code, msg)
			}
		}
		if n := len(h.upstream.calls()); n != 0 {
			t.Errorf("upstream called %d times for invalid requests", n)
		}
	})
}

// hideLength makes the client send a body chunked, of unknown length.
type hideLength struct{ io.Reader }

func TestProxyBodyReplayLimit(t *testing.T) {
	const limit = 1024
	cases := []struct {
		name     string
		size     int
		chunked  bool
		replayed bool
	}{
		{"at the limit", limit, false, true},
		{"at the limit, chunked", limit, true, true},
		{"over the limit", limit + 1, false, false},
		{"far over the limit, chunked", 64 * limit, true, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{server: func(o *Options) { o.MaxReplayBody = limit }})
			access, _ := h.importConn("c1", provAcme, nil)
			h.upstream.rejectToken(access, http.StatusUnauthorized)
			body := bytes.Repeat([]byte("0123456789abcdef"), c.size/16+1)[:c.size]
			var rd io.Reader = bytes.NewReader(body)
			if c.chunked {
				rd = hideLength{rd}
			}
			req, _ := http.NewRequestWithContext(t.Context(), "PUT", h.api.URL+"/v1/proxy/c1/upload", rd)
			req.Header.Set("Authorization", "Bearer "+h.tokensKey)
			resp, err := h.api.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			calls := h.upstream.calls()
			for i, call := range calls {
				if !bytes.Equal(call.Body, body) {
					t.Errorf("attempt %d: upstream got %d bytes, want %d", i, len(call.Body), len(body))
				}
			}
			if c.replayed {
				if resp.StatusCode != http.StatusOK || len(calls) != 2 {
					t.Errorf("status %d, %d upstream calls; want 200 after one replay", resp.StatusCode, len(calls))
				}
			} else if resp.StatusCode != http.StatusUnauthorized || len(calls) != 1 {
				t.Errorf("status %d, %d upstream calls; want the provider's 401 and no replay", resp.StatusCode, len(calls))
			}
		})
	}
}

func TestProxyRefreshFailure(t *testing.T) {
	t.Run("terminal", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		access, _ := h.importConn("c1", provAcme, nil)
		h.upstream.rejectToken(access, http.StatusUnauthorized)
		h.authz.FailNext(1, http.StatusBadRequest, http.Header{"Content-Type": {"application/json"}},
			`{"error":"invalid_grant","error_description":"`+providerText+`"}`)
		r := h.do("POST", "/v1/proxy/c1/x", h.tokensKey, "body", nil)
		code, msg := r.errCode(t)
		if r.status != http.StatusConflict || code != codeReauthRequired {
			t.Fatalf("status %d code %q, want 409 reauth_required (not the provider's 401)", r.status, code)
		}
		if strings.Contains(msg, providerText) || strings.Contains(string(r.body), "says no") {
			t.Errorf("tokens scope sees provider text: %q", msg)
		}
		if r.header.Get("WWW-Authenticate") != "" {
			t.Errorf("the provider's 401 challenge reached the caller")
		}
		// Dead now: the next call fails at once, without the provider API.
		r = h.do("GET", "/v1/proxy/c1/x", h.adminKey, nil, nil)
		if code, msg := r.errCode(t); r.status != http.StatusConflict || code != codeReauthRequired || !strings.Contains(msg, providerText) {
			t.Errorf("admin on a dead connection: %d %q %q", r.status, code, msg)
		}
		if n := len(h.upstream.calls()); n != 1 {
			t.Errorf("upstream calls = %d, want 1", n)
		}
	})
	t.Run("transient", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		access, _ := h.importConn("c1", provAcme, nil)
		h.upstream.rejectToken(access, http.StatusUnauthorized)
		h.authz.FailNext(1, http.StatusServiceUnavailable, http.Header{"Retry-After": {"7"}}, "busy")
		r := h.do("GET", "/v1/proxy/c1/x", h.tokensKey, nil, nil)
		if code, _ := r.errCode(t); r.status != http.StatusServiceUnavailable || code != codeProviderUnavailable {
			t.Errorf("status %d code %q, want 503 provider_unavailable", r.status, code)
		}
		if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 {
			t.Errorf("Retry-After %q", r.header.Get("Retry-After"))
		}
	})
}

func TestProxyErrors(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.importConn("c1", provAcme, nil)
	h.importConn("n1", provNoAPI, nil)

	r := h.do("GET", "/v1/proxy/nope/x", h.tokensKey, nil, nil)
	if code, _ := r.errCode(t); r.status != http.StatusNotFound || code != codeNotFound {
		t.Errorf("unknown connection: %d %q", r.status, code)
	}
	r = h.do("GET", "/v1/proxy/n1/x", h.tokensKey, nil, nil)
	if code, msg := r.errCode(t); r.status != http.StatusBadRequest || code != codeInvalidRequest || !strings.Contains(msg, "api_base_url") {
		t.Errorf("provider without api_base_url: %d %q %q", r.status, code, msg)
	}

	// Upstream unreachable: 502 in our format.
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL, _ := url.Parse(dead.URL + "/api")
	dead.Close()
	h2 := newHarness(t, harnessOptions{server: func(o *Options) { o.Targets[provAcme] = ProxyTarget{BaseURL: deadURL} }})
	h2.importConn("c1", provAcme, nil)
	r = h2.do("GET", "/v1/proxy/c1/x?secret=in-query", h2.tokensKey, nil, nil)
	if code, _ := r.errCode(t); r.status != http.StatusBadGateway || code != codeBadGateway {
		t.Errorf("dead upstream: %d %q", r.status, code)
	}
	if strings.Contains(h2.logs.String(), "in-query") {
		t.Errorf("the proxied URL's query was logged")
	}
}

func TestProxyStreamsResponses(t *testing.T) {
	release := make(chan struct{})
	stream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		_, _ = io.WriteString(w, "first\n")
		http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "second\n")
	}))
	t.Cleanup(stream.Close)
	big := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		for range 128 { // 8 MiB
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	t.Cleanup(big.Close)
	streamURL, _ := url.Parse(stream.URL)
	bigURL, _ := url.Parse(big.URL)
	h := newHarness(t, harnessOptions{server: func(o *Options) {
		o.Targets[provAcme] = ProxyTarget{BaseURL: streamURL}
		o.Targets[provFlaky] = ProxyTarget{BaseURL: bigURL}
	}})
	h.importConn("c1", provAcme, nil)
	h.importConn("big", provFlaky, nil)

	req, _ := http.NewRequestWithContext(t.Context(), "GET", h.api.URL+"/v1/proxy/c1/events", nil)
	req.Header.Set("Authorization", "Bearer "+h.tokensKey)
	resp, err := h.api.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	// The upstream holds the rest of its answer until we have read the
	// first line: this only passes if the proxy streams.
	line, err := br.ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("first line %q, err %v", line, err)
	}
	close(release)
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "second\n" {
		t.Errorf("rest %q, err %v", rest, err)
	}

	req, _ = http.NewRequestWithContext(t.Context(), "GET", h.api.URL+"/v1/proxy/big/blob", nil)
	req.Header.Set("Authorization", "Bearer "+h.tokensKey)
	resp2, err := h.api.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	n, err := io.Copy(io.Discard, resp2.Body)
	if err != nil || n != 8<<20 {
		t.Errorf("large body: %d bytes, err %v; want 8 MiB", n, err)
	}
}

// TestProxyPathEscapes: no request path reaches another host or a path
// above the provider's base path; the nasty ones are refused outright.
func TestProxyPathEscapes(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.importConn("c1", provAcme, nil)
	upHost := strings.TrimPrefix(h.upstream.URL, "http://")

	cases := []struct {
		target string
		want   string // upstream request URI; "" = refused with 400
	}{
		{"/v1/proxy/c1/../../admin", ""},
		{"/v1/proxy/c1/a/../b", ""},
		{"/v1/proxy/c1/a/..", ""},
		{"/v1/proxy/c1/./a", ""},
		{"/v1/proxy/c1/.", ""},
		{"/v1/proxy/c1/..", ""},
		{"/v1/proxy/c1/...", ""},
		{"/v1/proxy/c1/%2e%2e/x", ""},
		{"/v1/proxy/c1/%2E%2E/x", ""},
		{"/v1/proxy/c1/%2e./x", ""},
		{"/v1/proxy/c1/.%2E/x", ""},
		{"/v1/proxy/c1/%2e", ""},
		{"/v1/proxy/c1/%252e%252e/x", ""},
		{"/v1/proxy/c1/%25252e%25252e/x", ""},
		{"/v1/proxy/c1/..;/x", ""},
		{"/v1/proxy/c1/..;jsessionid=1/x", ""},
		{"/v1/proxy/c1/%2e%2e%3b/x", ""},
		{"/v1/proxy/c1/..%20/x", ""},
		{"/v1/proxy/c1/a%2Fb", ""},
		{"/v1/proxy/c1/a%2fb", ""},
		{"/v1/proxy/c1/..%2F..%2Fadmin", ""},
		{"/v1/proxy/c1/%252F", ""},
		{"/v1/proxy/c1/a%5Cb", ""},
		{"/v1/proxy/c1/a%5cb", ""},
		{"/v1/proxy/c1/..%5C..%5Cadmin", ""},
		{`/v1/proxy/c1/a\b`, ""},
		{`/v1/proxy/c1/..\..\admin`, ""},
		{"/v1/proxy/c1//evil.example/x", ""},
		{"/v1/proxy/c1/a//b", ""},
		{"/v1/proxy/c1/https://evil.example/x", ""},
		{"/v1/proxy/c1/https:%2F%2Fevil.example/x", ""},
		{"/v1/proxy/c1/%2F%2Fevil.example", ""},
		{"/v1/proxy/c1/a%00b", ""},
		{"/v1/proxy/c1/a%0d%0aHost:%20evil", ""},
		{"/v1/proxy/c1/a%7fb", ""},
		{"/v1/proxy/c1/../../../c2/x", ""},
		{"/v1/proxy/../proxy/c1/x", ""},

		{"/v1/proxy/c1/", "/api/v2/"},
		{"/v1/proxy/c1/a/b", "/api/v2/a/b"},
		{"/v1/proxy/c1/a/b/", "/api/v2/a/b/"},
		{"/v1/proxy/c1/a/b?q=%2e%2e/../x&r=1", "/api/v2/a/b?q=%2e%2e/../x&r=1"},
		{"/v1/proxy/c1/a%20b/c%3Fd", "/api/v2/a%20b/c%3Fd"},
		{"/v1/proxy/c1/a%3Bb", "/api/v2/a%3Bb"},
		{"/v1/proxy/c1/@evil.example/x", "/api/v2/@evil.example/x"},
		{"/v1/proxy/c1/https:/evil.example", "/api/v2/https:/evil.example"},
		{"/v1/proxy/c1/evil.example:443/x", "/api/v2/evil.example:443/x"},
		{"/v1/proxy/c1/.well-known/x", "/api/v2/.well-known/x"},
		{"/v1/proxy/c1/..a/a..", "/api/v2/..a/a.."},
		{"/v1/proxy/c1/%E2%80%AE/x", "/api/v2/%E2%80%AE/x"},
		{"http://evil.example/v1/proxy/c1/x", "/api/v2/x"},
	}
	for _, c := range cases {
		before := len(h.upstream.calls())
		rec := h.serveRaw("GET", c.target, h.tokensKey)
		calls := h.upstream.calls()[before:]
		for _, call := range calls {
			if call.Host != upHost || !strings.HasPrefix(call.URI, "/api/v2/") {
				t.Errorf("%s: reached host %s path %s, outside the base", c.target, call.Host, call.URI)
			}
		}
		if c.want == "" {
			if rec.Code != http.StatusBadRequest || len(calls) != 0 {
				t.Errorf("%s: status %d, %d upstream calls; want 400 and none", c.target, rec.Code, len(calls))
			} else if !strings.Contains(rec.Body.String(), codeInvalidRequest) {
				t.Errorf("%s: body %s", c.target, rec.Body.String())
			}
			continue
		}
		if rec.Code != http.StatusOK || len(calls) != 1 || calls[0].URI != c.want {
			got := ""
			if len(calls) > 0 {
				got = calls[0].URI
			}
			t.Errorf("%s: status %d, upstream %q; want 200 and %q", c.target, rec.Code, got, c.want)
		}
	}

	// Without a trailing slash the route does not match: not proxied.
	before := len(h.upstream.calls())
	if rec := h.serveRaw("GET", "/v1/proxy/c1", h.tokensKey); rec.Code == http.StatusOK || len(h.upstream.calls()) != before {
		t.Errorf("/v1/proxy/c1: status %d, proxied %v", rec.Code, len(h.upstream.calls()) != before)
	}
}

func TestUpstreamURLBasePaths(t *testing.T) {
	cases := []struct{ base, path, want string }{
		{"https://api.example", "/v1/proxy/c1/x", "https://api.example/x"},
		{"https://api.example/", "/v1/proxy/c1/x", "https://api.example/x"},
		{"https://api.example/v2/", "/v1/proxy/c1/x/y", "https://api.example/v2/x/y"},
		{"https://api.example/a%2Fb", "/v1/proxy/c1/x", "https://api.example/a%2Fb/x"},
		{"https://api.example:8443/v2", "/v1/proxy/c1/", "https://api.example:8443/v2/"},
	}
	for _, c := range cases {
		base, _ := url.Parse(c.base)
		in, _ := url.ParseRequestURI(c.path)
		got, err := upstreamURL(base, in)
		if err != nil || got.String() != c.want {
			t.Errorf("base %s path %s: %v %v, want %s", c.base, c.path, got, err, c.want)
		}
	}
	for _, bad := range []string{"ftp://x", "/relative", "https://user:pw@x", "https://x?q=1"} {
		u, _ := url.Parse(bad)
		if err := checkBaseURL(u); err == nil {
			t.Errorf("base %q accepted", bad)
		}
	}
}

// TestProxyConcurrentRefreshOnce: many calls rejected with the same stale
// token share one refresh; a second one would spend the rotated refresh
// token twice, and the authorization server would revoke the grant.
func TestProxyConcurrentRefreshOnce(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	access, _ := h.importConn("c1", provAcme, nil)
	h.upstream.rejectToken(access, http.StatusUnauthorized)

	const n = 8
	statuses := make(chan int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(t.Context(), "POST", h.api.URL+"/v1/proxy/c1/x", strings.NewReader(strconv.Itoa(i)))
			req.Header.Set("Authorization", "Bearer "+h.tokensKey)
			resp, err := h.api.Client().Do(req)
			if err != nil {
				statuses <- 0
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(statuses)
	for s := range statuses {
		if s != http.StatusOK {
			t.Errorf("a concurrent call got status %d", s)
		}
	}
	if got := h.authz.RefreshCalls(); got != 1 {
		t.Errorf("refresh calls = %d, want 1", got)
	}
	if h.authz.ReuseDetected() != 0 {
		t.Errorf("the authorization server saw a refresh token reused")
	}
}

// TestProxyClientGone: a caller that hangs up gets no answer written, and
// the log says so.
func TestProxyClientGone(t *testing.T) {
	started := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
	}))
	t.Cleanup(slow.Close)
	slowURL, _ := url.Parse(slow.URL)
	h := newHarness(t, harnessOptions{server: func(o *Options) { o.Targets[provAcme] = ProxyTarget{BaseURL: slowURL} }})
	h.importConn("c1", provAcme, nil)

	ctx, cancel := context.WithCancel(t.Context())
	req := httptest.NewRequestWithContext(ctx, "GET", "/v1/proxy/c1/wait", nil)
	req.Header.Set("Authorization", "Bearer "+h.tokensKey)
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.server.Handler().ServeHTTP(rec, req)
	}()
	<-started
	cancel()
	<-done
	if rec.Body.Len() != 0 {
		t.Errorf("an answer was written to a caller that had gone: %q", rec.Body.String())
	}
	found := false
	for _, rec := range h.requestLogs() {
		if rec["route"] == "/v1/proxy/{id}/{path...}" {
			found = rec["status"] == 499.0 && rec["error"] == errCodeCanceled && rec["connection"] == "c1"
		}
	}
	if !found {
		t.Errorf("request log does not record the hang-up")
	}
}
