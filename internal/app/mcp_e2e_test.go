package app_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/app"
	"github.com/tokenbroker/tokenbroker/internal/authztest"
	"github.com/tokenbroker/tokenbroker/internal/fakeclock"
	"github.com/tokenbroker/tokenbroker/internal/mcptest"
	"github.com/tokenbroker/tokenbroker/internal/pgtest"
	"github.com/tokenbroker/tokenbroker/seal"
	"github.com/tokenbroker/tokenbroker/store"
)

// mcpRig is tokenbroker serving on a fixed loopback port (its public_url),
// with MCP servers built on the official Go SDK and a fosite authorization
// server that registers clients dynamically, binds tokens to the MCP
// server's resource and rotates refresh tokens with reuse detection.
type mcpRig struct {
	t     *testing.T
	dir   string
	mcp   *mcptest.Server
	authz *authztest.Server
	clock *fakeclock.Offset
	a     *app.App
	base  string
	key   string
}

func newMCPRig(t *testing.T) *mcpRig { return newMCPRigOn(t, "", nil) }

// newMCPRigOn is newMCPRig on the PostgreSQL database dsn ("" for SQLite);
// extra, when set, adds to the config's mcp section.
func newMCPRigOn(t *testing.T, dsn string, extra func(*mcpRig) string) *mcpRig {
	t.Helper()
	r := &mcpRig{t: t, clock: &fakeclock.Offset{}}
	r.mcp = mcptest.New(t, mcptest.Options{})
	r.authz = authztest.New(t, authztest.Options{
		AccessTokenLifespan: time.Hour,
		Resource:            r.mcp.URL,
		DynamicRegistration: true,
		Scopes:              []string{mcptest.ReadScope, mcptest.AdminScope, "offline_access"},
	})
	r.mcp.Start(r.authz)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.base = "http://" + ln.Addr().String()
	dir := t.TempDir()
	r.dir = dir
	database := "sqlite:" + dir + "/tokenbroker.db"
	if dsn != "" {
		database = dsn
	}
	cfg := fmt.Sprintf(`listen: %[2]s
public_url: %[3]s
data_dir: %[1]s
database: %[4]q
encryption_keys_file: %[1]s/keys
log_level: debug
mcp:
  allow_private_addresses: true
`, dir, ln.Addr().String(), r.base, database)
	if extra != nil {
		cfg += extra(r)
	}
	path := filepath.Join(dir, "tokenbroker.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	srv := serveApp(t, path, ln, app.Options{
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), Now: r.clock.Now}, r.clock.Now())
	r.a, r.key = srv.a, srv.key
	t.Cleanup(func() {
		_ = srv.stop()
		// Token values must never reach the log.
		for _, s := range r.mcp.Seen() {
			if strings.Contains(logs.String(), s.Token) {
				t.Error("an access token appears in the log")
			}
		}
	})
	return r
}

func (r *mcpRig) do(method, path string, body any) (int, map[string]any) {
	r.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, r.base+path, rd)
	req.Header.Set("Authorization", "Bearer "+r.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// connect creates a connect session for the MCP server and follows its
// link the way a browser would; the authorization server consents at once.
func (r *mcpRig) connect(id, serverURL string) map[string]any {
	r.t.Helper()
	code, sess := r.do(http.MethodPost, "/v1/connect-sessions", map[string]any{"connection_id": id, "mcp_server_url": serverURL})
	if code != http.StatusCreated {
		r.t.Fatalf("POST /v1/connect-sessions: %d %v", code, sess)
	}
	link, _ := sess["url"].(string)
	resp, err := http.Get(link)
	if err != nil {
		r.t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/v1/connect/callback" {
		r.t.Fatalf("following the connect link ended at %s with %d: %.300s", resp.Request.URL.Path, resp.StatusCode, page)
	}
	return sess
}

// rpc is one JSON-RPC call through the proxy.
func (r *mcpRig) rpc(id string, header http.Header, body string) *http.Response {
	r.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, r.base+"/v1/proxy/"+id+"/", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+r.key)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	return resp
}

// readEvent reads one server-sent event's data.
func readEvent(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	var data []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the event stream: %v (so far %q)", err, data)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			if len(data) > 0 {
				return strings.Join(data, "\n")
			}
			continue
		}
		if d, ok := strings.CutPrefix(line, "data:"); ok {
			data = append(data, strings.TrimSpace(d))
		}
	}
}

func body(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return string(b)
}

func TestMCPServerEndToEnd(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { testMCPServerEndToEnd(t, newMCPRig(t)) })
	t.Run("postgres", func(t *testing.T) { testMCPServerEndToEnd(t, newMCPRigOn(t, pgtest.FreshDatabase(t), nil)) })
}

func testMCPServerEndToEnd(t *testing.T, r *mcpRig) {

	// Connect by URL alone: discovery, dynamic registration, consent.
	sess := r.connect("m1", r.mcp.URL)
	if sess["provider"] != store.ProviderMCP {
		t.Errorf("session provider %v", sess["provider"])
	}
	code, conn := r.do(http.MethodGet, "/v1/connections/m1", nil)
	if code != http.StatusOK || conn["status"] != "active" || conn["mcp_server_url"] != r.mcp.URL || conn["issuer"] != r.authz.Issuer {
		t.Fatalf("GET /v1/connections/m1: %d %v", code, conn)
	}
	if r.authz.Registrations() != 1 {
		t.Fatalf("%d registrations, want 1", r.authz.Registrations())
	}
	code, tok := r.do(http.MethodGet, "/v1/connections/m1/token", nil)
	if code != http.StatusOK || tok["access_token"] == "" {
		t.Fatalf("GET token: %d", code)
	}
	first := tok["access_token"].(string)

	// initialize through the proxy; the session id comes back and is sent
	// on, with the protocol version.
	resp := r.rpc("m1", nil, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}`)
	init := body(t, resp)
	sid := resp.Header.Get("Mcp-Session-Id")
	if resp.StatusCode != http.StatusOK || sid == "" || !strings.Contains(init, `"serverInfo"`) {
		t.Fatalf("initialize: %d session %q: %.300s", resp.StatusCode, sid, init)
	}
	h := http.Header{"Mcp-Session-Id": {sid}, "Mcp-Protocol-Version": {"2025-06-18"}}
	resp = r.rpc("m1", h, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	if b := body(t, resp); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("initialized: %d %s", resp.StatusCode, b)
	}

	// A streamed tools/call: the first event reaches the caller while the
	// tool is still waiting to send the second.
	resp = r.rpc("m1", h, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"stream","arguments":{},"_meta":{"progressToken":"p1"}}}`)
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("tools/call stream: %d %s", resp.StatusCode, ct)
	}
	br := bufio.NewReader(resp.Body)
	if ev := readEvent(t, br); !strings.Contains(ev, "notifications/progress") || !strings.Contains(ev, "first event") {
		t.Fatalf("first event %s", ev)
	}
	r.mcp.Release() // only now may the server send the second
	if ev := readEvent(t, br); !strings.Contains(ev, "second event") || !strings.Contains(ev, `"id":2`) {
		t.Fatalf("second event %s", ev)
	}
	resp.Body.Close()
	seen := r.mcp.Seen()
	last := seen[len(seen)-1]
	if last.SessionID != sid || last.ProtocolVersion != "2025-06-18" || last.Token != first {
		t.Fatalf("the MCP server saw session %q version %q (token forwarded: %v)", last.SessionID, last.ProtocolVersion, last.Token == first)
	}

	// The token dies at the authorization server: the MCP server answers
	// 401 invalid_token, the proxy refreshes once (with the resource) and
	// replays the call.
	r.authz.Expire(t, first)
	resp = r.rpc("m1", h, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}`)
	if b := body(t, resp); resp.StatusCode != http.StatusOK || !strings.Contains(b, "echo: hi") {
		t.Fatalf("tools/call after expiry: %d %.300s", resp.StatusCode, b)
	}
	if r.authz.RefreshCalls() != 1 {
		t.Fatalf("%d refreshes after invalid_token, want 1", r.authz.RefreshCalls())
	}

	// Expiry by the clock, and 100 concurrent reads: one refresh.
	r.clock.Advance(2 * time.Hour)
	var wg sync.WaitGroup
	tokens := make([]string, 100)
	for i := range tokens {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodGet, r.base+"/v1/connections/m1/token", nil)
			req.Header.Set("Authorization", "Bearer "+r.key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var v map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&v)
			tokens[i], _ = v["access_token"].(string)
		})
	}
	wg.Wait()
	if r.authz.RefreshCalls() != 2 || r.authz.ReuseDetected() != 0 {
		t.Fatalf("100 reads of an expired token: %d refreshes in all (want 2), %d reuses", r.authz.RefreshCalls(), r.authz.ReuseDetected())
	}
	for _, tk := range tokens {
		if tk == "" || tk != tokens[0] {
			t.Fatal("the concurrent readers did not all get the one refreshed token")
		}
	}
	// Every grant carried the resource: the server refuses any without it.
	if r.authz.ResourceRefused() != 0 || r.authz.ResourceSeen() != 3 {
		t.Fatalf("resource: %d refused, %d seen (want 0 and 3: exchange and two refreshes)", r.authz.ResourceRefused(), r.authz.ResourceSeen())
	}

	// A second connection to the same server reuses the registration.
	r.connect("m2", r.mcp.URL)
	if r.authz.Registrations() != 1 {
		t.Fatalf("second connection: %d registrations, want 1", r.authz.Registrations())
	}

	// Step-up: 403 insufficient_scope goes back untouched, is never a
	// refresh, and is recorded on the connection with an event.
	refreshes := r.authz.RefreshCalls()
	resp = r.rpc("m1", h, `{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"admin","arguments":{}}}`)
	b := body(t, resp)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="insufficient_scope"`) {
		t.Fatalf("admin tool: %d %q %.200s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), b)
	}
	if r.authz.RefreshCalls() != refreshes {
		t.Fatal("insufficient_scope triggered a refresh")
	}
	_, conn = r.do(http.MethodGet, "/v1/connections/m1", nil)
	if fmt.Sprint(conn["needed_scopes"]) != "["+mcptest.AdminScope+"]" {
		t.Fatalf("needed_scopes %v", conn["needed_scopes"])
	}
	evs, err := r.a.Store.(store.Outbox).ConnectionEvents(t.Context(), "m1", 10)
	if err != nil || len(evs) == 0 || evs[0].Type != "connection.scope_required" {
		t.Fatalf("events %+v, %v", evs, err)
	}
	// A new connect session asks for the union; after consent the call
	// succeeds and nothing is needed any more.
	sess = r.connect("m1", r.mcp.URL)
	scopes := fmt.Sprint(sess["scopes"])
	if !strings.Contains(scopes, mcptest.AdminScope) || !strings.Contains(scopes, mcptest.ReadScope) {
		t.Fatalf("step-up session scopes %s", scopes)
	}
	_, conn = r.do(http.MethodGet, "/v1/connections/m1", nil)
	if conn["needed_scopes"] != nil || !slices.Contains(strings.Fields(conn["scope"].(string)), mcptest.AdminScope) {
		t.Fatalf("after step-up: scope %v needed %v", conn["scope"], conn["needed_scopes"])
	}
	resp = r.rpc("m1", h, `{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"admin","arguments":{}}}`)
	if b := body(t, resp); resp.StatusCode != http.StatusOK || !strings.Contains(b, "admin ok") {
		t.Fatalf("admin tool after step-up: %d %.200s", resp.StatusCode, b)
	}
	if r.authz.Registrations() != 1 {
		t.Fatalf("step-up registered again: %d", r.authz.Registrations())
	}

	// Deleting a connection revokes its grant at the issuer (RFC 7009).
	_, tok = r.do(http.MethodGet, "/v1/connections/m2/token", nil)
	m2 := tok["access_token"].(string)
	code, del := r.do(http.MethodDelete, "/v1/connections/m2", nil)
	if code != http.StatusOK || del["revoked"] != true {
		t.Fatalf("DELETE m2: %d %v", code, del)
	}
	if r.authz.Active(t, m2) {
		t.Fatal("the deleted connection's token is still active at the issuer")
	}
}

// A server whose authorization server's metadata names another issuer is
// refused when the session is created, and nothing is registered.
func TestMCPIssuerMismatchRefused(t *testing.T) {
	r := newMCPRig(t)
	bad := mcptest.New(t, mcptest.Options{AuthorizationServer: r.authz.Issuer + "/"})
	bad.Start(r.authz)
	code, out := r.do(http.MethodPost, "/v1/connect-sessions", map[string]any{"connection_id": "bad", "mcp_server_url": bad.URL})
	msg := fmt.Sprint(out["error"])
	if code != http.StatusBadRequest || !strings.Contains(msg, "issuer") {
		t.Fatalf("mismatched issuer: %d %s", code, msg)
	}
	if r.authz.Registrations() != 0 {
		t.Fatal("registered with a mismatched issuer")
	}
	// A connection to one MCP server never takes a grant for another.
	r.connect("m1", r.mcp.URL)
	code, out = r.do(http.MethodPost, "/v1/connect-sessions", map[string]any{"connection_id": "m1", "mcp_server_url": bad.URL})
	if code != http.StatusConflict {
		t.Fatalf("m1 for another server: %d %v", code, out)
	}
	code, out = r.do(http.MethodPost, "/v1/connect-sessions", map[string]any{"connection_id": "m1", "provider": "acme", "mcp_server_url": r.mcp.URL})
	if code != http.StatusBadRequest {
		t.Fatalf("provider and mcp_server_url: %d %v", code, out)
	}
	// Without allow_private_addresses a loopback server is refused too;
	// this rig allows it, so check the message a bad URL gets instead.
	code, out = r.do(http.MethodPost, "/v1/connect-sessions", map[string]any{"connection_id": "bad", "mcp_server_url": "ftp://127.0.0.1/mcp"})
	if code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(out["error"]), "mcp_server_url") {
		t.Fatalf("bad URL: %d %v", code, out)
	}
}

// An authorization server that forgot tokenbroker's client answers
// invalid_client: the registration is dropped, the connection needs a
// person, and the next connect session registers again.
func TestMCPForgottenRegistrationRenewed(t *testing.T) {
	r := newMCPRig(t)
	r.connect("m1", r.mcp.URL)
	regs := r.a.Store.(store.MCPRegistrations)
	reg, err := regs.GetMCPRegistration(t.Context(), r.authz.Issuer)
	if err != nil || reg.Method != "dynamic" || len(reg.ClientSecret) == 0 {
		t.Fatalf("registration %+v, %v", reg, err)
	}
	if strings.Contains(string(reg.ClientSecret), "dyn-") || bytes.Contains(reg.ClientSecret, []byte(reg.ClientID)) {
		t.Fatal("the client secret is not sealed")
	}
	r.authz.ForgetClient(reg.ClientID)
	code, out := r.do(http.MethodPost, "/v1/connections/m1/refresh", nil)
	if code != http.StatusConflict {
		t.Fatalf("refresh with a forgotten client: %d %v", code, out)
	}
	if _, err := regs.GetMCPRegistration(t.Context(), r.authz.Issuer); err == nil {
		t.Fatal("the forgotten registration is still stored")
	}
	r.connect("m1", r.mcp.URL)
	if r.authz.Registrations() != 2 {
		t.Fatalf("%d registrations, want 2", r.authz.Registrations())
	}
	code, conn := r.do(http.MethodGet, "/v1/connections/m1", nil)
	if code != http.StatusOK || conn["status"] != "active" {
		t.Fatalf("after reconnecting: %d %v", code, conn)
	}
	if code, _ := r.do(http.MethodPost, "/v1/connections/m1/refresh", nil); code != http.StatusOK {
		t.Fatalf("refresh with the new registration: %d", code)
	}
}

// tokenbroker serves its Client ID Metadata Document at public_url.
func TestMCPClientMetadataDocument(t *testing.T) {
	r := newMCPRig(t)
	resp, err := http.Get(r.base + "/v1/mcp/client-metadata.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		ClientID     string   `json:"client_id"`
		RedirectURIs []string `json:"redirect_uris"`
		GrantTypes   []string `json:"grant_types"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %v", resp.StatusCode, err)
	}
	if doc.ClientID != r.base+"/v1/mcp/client-metadata.json" || !slices.Equal(doc.RedirectURIs, []string{r.base + "/v1/connect/callback"}) ||
		!slices.Contains(doc.GrantTypes, "refresh_token") {
		t.Fatalf("document %+v", doc)
	}
}

// A client configured for the issuer is used as it is: nothing is
// registered, and its secret comes from the environment.
func TestMCPConfiguredClient(t *testing.T) {
	r := newMCPRigOn(t, "", func(r *mcpRig) string {
		t.Setenv("MCP_TEST_CLIENT_SECRET", r.authz.ClientSecret)
		r.authz.AddRedirectURI(r.base + "/v1/connect/callback")
		return fmt.Sprintf("  clients:\n    - issuer: %s\n      client_id: %s\n      client_secret_env: MCP_TEST_CLIENT_SECRET\n",
			r.authz.Issuer, r.authz.ClientID)
	})
	r.connect("m1", r.mcp.URL)
	if r.authz.Registrations() != 0 {
		t.Fatalf("%d dynamic registrations with a configured client", r.authz.Registrations())
	}
	reg, err := r.a.Store.(store.MCPRegistrations).GetMCPRegistration(t.Context(), r.authz.Issuer)
	if err != nil || reg.Method != "configured" || reg.ClientID != r.authz.ClientID {
		t.Fatalf("registration %+v, %v", reg, err)
	}
	if code, out := r.do(http.MethodPost, "/v1/connections/m1/refresh", nil); code != http.StatusOK {
		t.Fatalf("refresh with the configured client: %d %v", code, out)
	}
	resp := r.rpc("m1", nil, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}`)
	if b := body(t, resp); resp.StatusCode != http.StatusOK {
		t.Fatalf("initialize: %d %.200s", resp.StatusCode, b)
	}
}

// A key rotation re-encrypts the MCP client secrets too: after it the old
// key is not needed, and refreshes still authenticate.
func TestMCPKeyRotationReseals(t *testing.T) {
	r := newMCPRig(t)
	r.connect("m1", r.mcp.URL)
	newKey, err := seal.Rotate(filepath.Join(r.dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.a.Keys.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.a.Broker.Reseal(t.Context()); err != nil {
		t.Fatal(err)
	}
	ids, err := r.a.Store.(store.SealedKeys).SealedKeyIDs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 1 || ids[newKey] == 0 {
		t.Fatalf("after reseal the data names keys %v, want only %s", ids, newKey)
	}
	if code, out := r.do(http.MethodPost, "/v1/connections/m1/refresh", nil); code != http.StatusOK {
		t.Fatalf("refresh after rotation: %d %v", code, out)
	}
}
