package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/audit"
	"github.com/tokenbroker/tokenbroker/internal/authztest"
	"github.com/tokenbroker/tokenbroker/server/ui"
	"github.com/tokenbroker/tokenbroker/store/sqlite"
)

// TestProxyDropsProviderHeaders: Set-Cookie, CORS and the provider's
// origin policies do not reach the caller unless the provider allows one.
func TestProxyDropsProviderHeaders(t *testing.T) {
	provider := func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Add("Set-Cookie", "session=provider-secret; Path=/")
		h.Add("Set-Cookie", "other=1")
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Credentials", "true")
		h.Set("Access-Control-Expose-Headers", "X-Total")
		h.Set("Strict-Transport-Security", "max-age=63072000")
		h.Set("Alt-Svc", `h3=":443"`)
		h.Set("X-Total", "42")
		h.Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}
	for _, c := range []struct {
		name    string
		allow   []string
		present []string
		absent  []string
	}{
		{"default", nil, []string{"X-Total", "Content-Type"},
			[]string{"Set-Cookie", "Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Access-Control-Expose-Headers", "Strict-Transport-Security", "Alt-Svc"}},
		{"allowlist", []string{"set-cookie", "Access-Control-Expose-Headers"}, []string{"X-Total", "Set-Cookie", "Access-Control-Expose-Headers"},
			[]string{"Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Strict-Transport-Security"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			up := httptestServer(t, http.HandlerFunc(provider))
			h := newHarness(t, harnessOptions{server: func(o *Options) {
				tg := o.Targets[provAcme]
				tg.BaseURL = mustURL(t, up)
				tg.AllowResponseHeaders = c.allow
				o.Targets[provAcme] = tg
			}})
			h.importConn("hdr-1", provAcme, nil)
			resp := h.do("GET", "/v1/proxy/hdr-1/x", h.tokensKey, nil, nil)
			if resp.status != http.StatusOK {
				t.Fatalf("status %d", resp.status)
			}
			for _, name := range c.present {
				if resp.header.Get(name) == "" {
					t.Errorf("%s was dropped", name)
				}
			}
			for _, name := range c.absent {
				if v := resp.header.Values(name); len(v) > 0 {
					t.Errorf("%s reached the caller: %q", name, v)
				}
			}
			if c.allow != nil && len(resp.header.Values("Set-Cookie")) != 2 {
				t.Errorf("allowed Set-Cookie: %q, want both", resp.header.Values("Set-Cookie"))
			}
		})
	}
}

// auditRig is a harness whose server records into a real audit.Recorder
// on its SQLite store.
func auditRig(t *testing.T) (*harness, *audit.Recorder) {
	var rec *audit.Recorder
	h := newHarness(t, harnessOptions{server: func(o *Options) {
		st := o.Keys.(*sqlite.Store)
		var err error
		rec, err = audit.New(audit.Options{Store: st, FlushInterval: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		o.Audit = rec
		o.AuditReader = st
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); rec.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return h, rec
}

// TestAuditTrail: token reads, proxied calls, refreshes and deletes are
// recorded with the key's name, and GET /v1/audit filters them by
// connection; no entry carries a token.
func TestAuditTrail(t *testing.T) {
	h, rec := auditRig(t)
	access, refresh := h.importConn("aud-1", provAcme, nil)
	h.importConn("aud-2", provAcme, nil)
	reader := h.newScopedKey(KeySpec{Name: "billing-service", Role: ScopeTokens, Connections: []string{"aud-1"}})
	proxy := h.newScopedKey(KeySpec{Name: "mail-service", Role: ScopeProxy})

	if r := h.do("GET", "/v1/connections/aud-1/token", reader, nil, nil); r.status != http.StatusOK {
		t.Fatalf("token: %d", r.status)
	}
	if r := h.do("GET", "/v1/connections/aud-2/token", reader, nil, nil); r.status != http.StatusNotFound {
		t.Fatalf("out-of-scope token: %d", r.status)
	}
	if r := h.do("POST", "/v1/proxy/aud-1/messages?secret=query-value", proxy, "body-not-recorded", nil); r.status != http.StatusOK {
		t.Fatalf("proxy: %d", r.status)
	}
	if r := h.do("POST", "/v1/connections/aud-1/refresh", h.adminKey, nil, nil); r.status != http.StatusOK {
		t.Fatalf("refresh: %d %s", r.status, r.body)
	}
	if r := h.do("DELETE", "/v1/connections/aud-2", h.adminKey, nil, nil); r.status/100 != 2 {
		t.Fatalf("delete: %d", r.status)
	}
	if err := rec.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}

	resp := h.do("GET", "/v1/audit?connection_id=aud-1", h.adminKey, nil, nil)
	if resp.status != http.StatusOK {
		t.Fatalf("GET /v1/audit: %d %s", resp.status, resp.body)
	}
	var page struct {
		Entries []struct {
			Time         time.Time `json:"time"`
			Actor        string    `json:"actor"`
			Action       string    `json:"action"`
			ConnectionID string    `json:"connection_id"`
			Outcome      string    `json:"outcome"`
			Detail       string    `json:"detail"`
		} `json:"entries"`
	}
	decodeJSON(t, resp.body, &page)
	got := map[string]string{}
	for _, e := range page.Entries {
		if e.ConnectionID != "aud-1" || e.Time.IsZero() {
			t.Errorf("entry %+v: want connection aud-1 and a time", e)
		}
		got[e.Action] = e.Actor + " " + e.Outcome + " " + e.Detail
	}
	for action, want := range map[string]string{
		ActionTokenRead: "billing-service ok",
		ActionProxy:     "mail-service ok POST " + patternProxy + " 200",
		ActionRefresh:   "test admin ok",
		ActionImport:    "test admin ok",
	} {
		if strings.TrimSpace(got[action]) != want {
			t.Errorf("%s: %q, want %q", action, got[action], want)
		}
	}
	all := h.do("GET", "/v1/audit?limit=1000", h.adminKey, nil, nil)
	for _, want := range []string{`"action":"connection.delete"`, `"connection_id":"aud-2","outcome":"not_found"`} {
		if !strings.Contains(string(all.body), want) {
			t.Errorf("audit lacks %s", want)
		}
	}
	for _, secret := range append(h.tokens.all(), access, refresh, "body-not-recorded", "query-value") {
		if secret != "" && strings.Contains(string(all.body), secret) {
			t.Fatalf("the audit trail carries a secret or a body")
		}
	}
	if r := h.do("GET", "/v1/audit", h.tokensKey, nil, nil); r.status != http.StatusForbidden {
		t.Errorf("GET /v1/audit with a tokens key: %d, want 403", r.status)
	}
	if r := h.do("GET", "/v1/audit?since=yesterday", h.adminKey, nil, nil); r.status != http.StatusBadRequest || !strings.Contains(string(r.body), "since") {
		t.Errorf("bad since: %d %s", r.status, r.body)
	}
}

// slowServer serves h's API on a real listener with short body deadlines.
func slowServer(t *testing.T, h *harness) string {
	srv := h.server.HTTPServer()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(LimitListener(ln, 2000)) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// TestSlowBodiesDoNotStarveTheServer: hundreds of clients trickling request
// bodies, with and without a key, are cut off by the body deadline, while
// /healthz and an authenticated token read are answered.
func TestSlowBodiesDoNotStarveTheServer(t *testing.T) {
	h := newHarness(t, harnessOptions{server: func(o *Options) {
		o.Limits = Limits{PublicBodyTimeout: 300 * time.Millisecond, BodyTimeout: 600 * time.Millisecond}
		dash, err := ui.New(ui.Options{
			Broker:      o.Broker,
			Keys:        o.Keys.(ui.KeyStore),
			SessionKeys: func() [][]byte { return [][]byte{bytes.Repeat([]byte("k"), 32)} },
		})
		if err != nil {
			t.Fatal(err)
		}
		o.UI = dash
	}})
	access, _ := h.importConn("slow-1", provAcme, nil)
	addr := slowServer(t, h)

	const slow = 300
	var wg sync.WaitGroup
	closed := make(chan string, slow)
	stop := make(chan struct{})
	defer close(stop)
	for i := range slow {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		t.Cleanup(func() { conn.Close() })
		path, auth := "/v1/connections", ""
		switch i % 3 {
		case 1:
			auth = "Authorization: Bearer " + h.adminKey + "\r\n" // a valid key, a body that never ends
		case 2:
			path = "/ui/signin"
		}
		// Small enough that net/http would wait to drain it after an early
		// answer; the client never finishes it.
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\n{", path, auth)
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Trickle a byte at a time until the server gives up on us.
			go func() {
				for {
					select {
					case <-stop:
						return
					case <-time.After(50 * time.Millisecond):
					}
					if _, err := conn.Write([]byte(" ")); err != nil {
						return
					}
				}
			}()
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				closed <- "closed without an answer"
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			// Then the server closes the connection: reading more ends.
			if _, err := br.ReadByte(); err == nil {
				closed <- "kept open"
				return
			}
			closed <- resp.Status
		}()
	}

	// Meanwhile the server answers.
	client := &http.Client{Timeout: 30 * time.Second}
	for range 5 {
		resp, err := client.Get("http://" + addr + "/healthz")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("/healthz during the slow flood: %v %v", resp, err)
		}
		resp.Body.Close()
		req, _ := http.NewRequest("GET", "http://"+addr+"/v1/connections/slow-1/token", nil)
		req.Header.Set("Authorization", "Bearer "+h.tokensKey)
		resp, err = client.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("token read during the slow flood: %v %v", resp, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), access) {
			t.Fatalf("token read during the slow flood did not return the token")
		}
	}
	// Every slow client is cut off by the server: none can hold a
	// connection for as long as it likes.
	wg.Wait()
	close(closed)
	kinds := map[string]int{}
	for k := range closed {
		kinds[k]++
	}
	total := 0
	for _, n := range kinds {
		total += n
	}
	if total != slow || kinds["kept open"] > 0 {
		t.Fatalf("%d of %d slow clients ended: %v", total, slow, kinds)
	}
	t.Logf("slow clients ended: %v", kinds)
}

// TestUnauthenticatedBodyNotDrained: a request refused for its key is
// answered at once and its connection closed, without reading the body.
func TestUnauthenticatedBodyNotDrained(t *testing.T) {
	// With an hour to send the body, only not reading it ends this quickly.
	h := newHarness(t, harnessOptions{server: func(o *Options) { o.Limits.PublicBodyTimeout = time.Hour }})
	addr := slowServer(t, h)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A guard against a hang, not a performance assertion.
	_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
	fmt.Fprintf(conn, "POST /v1/connections HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusUnauthorized || !resp.Close {
		t.Errorf("status %d, close %v; want 401 and Connection: close", resp.StatusCode, resp.Close)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	// The server closes the connection though the body never came.
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after the 401: %v, want EOF (connection closed)", err)
	}
}

// TestLimitListener: connections beyond the cap wait until one closes.
func TestLimitListener(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := LimitListener(raw, 2)
	defer ln.Close()
	accepted := make(chan net.Conn, 3)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	for range 3 {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	first, second := <-accepted, <-accepted
	select {
	case <-accepted:
		t.Fatal("a third connection was accepted over the cap of 2")
	default:
	}
	first.Close()
	third := <-accepted // accepted once a slot is free
	third.Close()
	second.Close()
}

// TestCertReloader: a renewed certificate is served without a restart,
// and a broken pair keeps the last good one.
func TestCertReloader(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeCert(t, certFile, keyFile, 1)
	r, err := NewCertReloader(certFile, keyFile, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "tls ok") }),
		TLSConfig: r.TLSConfig(), ErrorLog: log.New(io.Discard, "", 0)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	serial := func() int64 {
		t.Helper()
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the test reads the served certificate
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	if s := serial(); s != 1 {
		t.Fatalf("serial %d, want 1", s)
	}
	writeCert(t, certFile, keyFile, 2)
	// Make sure the change is visible to the size/mtime check even on a
	// coarse clock.
	future := time.Now().Add(time.Minute)
	_ = os.Chtimes(certFile, future, future)
	if s := serial(); s != 2 {
		t.Fatalf("after renewal: serial %d, want 2", s)
	}
	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s := serial(); s != 2 {
		t.Fatalf("with a broken key file: serial %d, want the last good (2)", s)
	}
	if _, err := NewCertReloader(certFile, keyFile, 0, nil); err == nil {
		t.Errorf("NewCertReloader with a broken key succeeded")
	}
}

func writeCert(t *testing.T, certFile, keyFile string, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestConnectCallbackIssuer: RFC 9207 against the real authorization
// server. An iss from another server, or none where the server promises
// one, fails the callback and creates nothing; the right one connects.
func TestConnectCallbackIssuer(t *testing.T) {
	for _, c := range []struct {
		name       string
		issuer     bool // the provider is configured with its issuer
		sendsIss   bool // the server sends iss and advertises it
		tamper     func(q map[string][]string)
		wantStatus int
	}{
		{"right iss", true, true, nil, http.StatusOK},
		{"iss of another server", true, true, func(q map[string][]string) { q["iss"] = []string{"http://evil.example"} }, http.StatusBadRequest},
		{"promised iss missing", true, true, func(q map[string][]string) { delete(q, "iss") }, http.StatusBadRequest},
		{"unexpected iss", true, false, func(q map[string][]string) { q["iss"] = []string{"http://evil.example"} }, http.StatusBadRequest},
		{"iss with no issuer configured", false, true, nil, http.StatusBadRequest},
		{"no iss, none promised", true, false, nil, http.StatusOK},
	} {
		t.Run(c.name, func(t *testing.T) {
			ch := newConnectHarnessWith(t, harnessOptions{issuer: c.issuer, authz: authztest.Options{ResponseIssuer: c.sendsIss}})
			id := "iss-" + strings.NewReplacer(" ", "-", ",", "").Replace(c.name)
			link := ch.session(t, map[string]any{"connection_id": id, "provider": provAcme})
			v := ch.browse(t, link, true)
			if v.callback == "" {
				t.Fatalf("the provider did not redirect to the callback (status %d)", v.status)
			}
			u := mustParse(t, v.callback)
			q := u.Query()
			if got := q.Get("iss"); c.sendsIss && got != ch.authz.Issuer {
				t.Fatalf("authorization server sent iss %q, want %q", got, ch.authz.Issuer)
			}
			if c.tamper != nil {
				c.tamper(q)
			}
			u.RawQuery = q.Encode()
			got := ch.get(t, u.String())
			if got.status != c.wantStatus {
				t.Fatalf("callback: status %d, want %d; %s", got.status, c.wantStatus, got.body)
			}
			if c.wantStatus != http.StatusOK {
				got.isPage(t, c.wantStatus, "wrong server")
				ch.assertNoConnection(t, id)
				// The session is used up: replaying the right answer fails.
				if again := ch.get(t, v.callback); again.status == http.StatusOK {
					t.Errorf("the refused callback's session still works")
				}
				return
			}
			if _, err := ch.store.GetConnection(t.Context(), id); err != nil {
				t.Errorf("connection not created: %v", err)
			}
		})
	}
}

func mustURL(t *testing.T, s *httptest.Server) *url.URL {
	t.Helper()
	return mustParse(t, s.URL)
}

func mustParse(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func httptestServer(t *testing.T, h http.Handler) *httptest.Server {
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

func decodeJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
}

// TestLongRequestsOutliveBodyDeadline: the body deadline covers the body
// only. A proxied call (with or without a body) whose provider answers
// long after the deadline, and a slow streamed answer, are not cut off.
func TestLongRequestsOutliveBodyDeadline(t *testing.T) {
	const deadline = 200 * time.Millisecond
	slow := httptestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		// Answer well after both deadlines have passed, streaming.
		for i := range 3 {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(2 * deadline):
			}
			fmt.Fprintf(w, "chunk %d\n", i)
			http.NewResponseController(w).Flush()
		}
	}))
	h := newHarness(t, harnessOptions{server: func(o *Options) {
		o.Limits = Limits{PublicBodyTimeout: deadline, BodyTimeout: deadline}
		tg := o.Targets[provAcme]
		tg.BaseURL = mustURL(t, slow)
		o.Targets[provAcme] = tg
	}})
	h.importConn("long-1", provAcme, nil)
	addr := slowServer(t, h)
	for _, body := range []string{"", `{"a":1}`} {
		method := "GET"
		if body != "" {
			method = "POST"
		}
		req, _ := http.NewRequest(method, "http://"+addr+"/v1/proxy/long-1/stream", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+h.tokensKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(got), "chunk 2") {
			t.Errorf("%s: status %d, body %q, err %v; want all three chunks", method, resp.StatusCode, got, err)
		}
	}
}
