package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/app"
	"github.com/tokenbroker/tokenbroker/internal/authztest"
	"github.com/tokenbroker/tokenbroker/server"
	"github.com/tokenbroker/tokenbroker/store"
)

// cliEnv is a real server (app wiring, SQLite, fosite) serving in-process,
// with the CLI's environment pointing at it.
type cliEnv struct {
	authz  *authztest.Server
	app    *app.App
	public string
	key    string
}

func newCLIEnv(t *testing.T) *cliEnv {
	t.Helper()
	dir := t.TempDir()
	authz := authztest.New(t, authztest.Options{})
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }))
	t.Cleanup(api.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	public := "http://" + ln.Addr().String()
	authz.AddRedirectURI(public + "/v1/connect/callback")
	t.Setenv("CLI_TEST_ACME_SECRET", authz.ClientSecret)
	cfgText := fmt.Sprintf(`listen: 127.0.0.1:0
public_url: %[7]s
data_dir: %[1]s
database: sqlite:%[1]s/tokenbroker.db
encryption_keys_file: %[1]s/keys
providers:
  - name: acme
    token_url: %[2]s
    authorize_url: %[3]s
    revocation_url: %[4]s
    client_id: %[5]s
    client_secret_env: CLI_TEST_ACME_SECRET
    api_base_url: %[6]s/api
    scopes: [read]
`, dir, authz.TokenURL(), authz.AuthorizeURL(), authz.RevocationURL(), authz.ClientID, api.URL, public)
	cfgPath := filepath.Join(dir, "tokenbroker.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.New(context.Background(), cfg, app.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	secret, key, err := server.GenerateAPIKey("cli test", server.ScopeAdmin, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Store.CreateAPIKey(context.Background(), key); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.ServeListener(ctx, ln, nil) }()
	t.Cleanup(func() {
		cancel()
		<-done
		a.Close()
	})
	t.Setenv(envURL, public)
	t.Setenv(envAPIKey, secret)
	return &cliEnv{authz: authz, app: a, public: public, key: secret}
}

// cli runs one command line in-process.
func (e *cliEnv) cli(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(t.Context(), args, &out, &errb)
	if strings.Contains(out.String(), e.key) || strings.Contains(errb.String(), e.key) {
		t.Errorf("%v: the API key appears in the output", args)
	}
	return code, out.String(), errb.String()
}

func (e *cliEnv) mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := e.cli(t, args...)
	if code != 0 {
		t.Fatalf("%v: exit %d, stderr %q", args, code, errOut)
	}
	return out
}

func TestCLIConnections(t *testing.T) {
	e := newCLIEnv(t)

	// Import with tokens from the environment.
	access, refresh, _ := e.authz.IssueTokens(t, "read")
	t.Setenv(envAccessToken, access)
	t.Setenv(envRefreshToken, refresh)
	out := e.mustCLI(t, "connections", "import", "--id", "c1", "--provider", "acme", "--expires-in", "1h", "--metadata", `{"team":"a"}`)
	if !strings.Contains(out, "created c1 (acme, active)") {
		t.Errorf("import output %q", out)
	}
	if strings.Contains(out, access) || strings.Contains(out, refresh) {
		t.Errorf("import printed a token")
	}

	// A client-credentials connection from a file.
	file := filepath.Join(t.TempDir(), "svc.json")
	if err := os.WriteFile(file, []byte(`{"id":"svc","provider":"acme","grant":"client_credentials"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	e.mustCLI(t, "connections", "import", "--file", file)

	out = e.mustCLI(t, "connections", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.HasPrefix(lines[1], "c1 ") || !strings.HasPrefix(lines[2], "svc ") {
		t.Errorf("list table:\n%s", out)
	}
	var list struct {
		Connections []struct {
			ID     string `json:"id"`
			Status string `json:"status"`
			Grant  string `json:"grant"`
		} `json:"connections"`
	}
	if err := json.Unmarshal([]byte(e.mustCLI(t, "connections", "list", "--json", "--provider", "acme")), &list); err != nil {
		t.Fatalf("list --json: %v", err)
	}
	if len(list.Connections) != 2 || list.Connections[1].Grant != "client_credentials" {
		t.Errorf("list --json = %+v", list.Connections)
	}
	if out := e.mustCLI(t, "connections", "list", "--limit", "1"); strings.Count(strings.TrimSpace(out), "\n") != 1 {
		t.Errorf("list --limit 1:\n%s", out)
	}

	out = e.mustCLI(t, "connections", "get", "c1")
	for _, want := range []string{"id:", "c1", "status:", "active", "refresh_token:", "yes", `{"team":"a"}`} {
		if !strings.Contains(out, want) {
			t.Errorf("get output lacks %q:\n%s", want, out)
		}
	}

	calls := e.authz.RefreshCalls()
	if out := e.mustCLI(t, "connections", "refresh", "c1"); !strings.Contains(out, "refreshed c1") || e.authz.RefreshCalls() != calls+1 {
		t.Errorf("refresh: output %q, %d refresh calls", out, e.authz.RefreshCalls()-calls)
	}

	// A connect link, followed by a browser.
	link := strings.TrimSpace(e.mustCLI(t, "connections", "connect-link", "--provider", "acme", "--id", "c2", "--redirect", "https://app.example/done"))
	if !strings.HasPrefix(link, e.public+"/v1/connect/") {
		t.Fatalf("connect-link printed %q", link)
	}
	browser := &http.Client{CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		if req.URL.Host == "app.example" {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	resp, err := browser.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusSeeOther || loc.Host != "app.example" || loc.Query().Get("connection_id") != "c2" {
		t.Fatalf("flow ended with %d to %q", resp.StatusCode, loc.Redacted())
	}
	if out := e.mustCLI(t, "connections", "get", "c2"); !strings.Contains(out, "active") {
		t.Errorf("c2 after connecting:\n%s", out)
	}

	// needs_reauth: get still exits 0 and says so; refresh exits 4.
	if _, err := e.app.Store.UpdateConnection(context.Background(), "c1", func(c store.Connection) (store.Connection, []store.Event, error) {
		c.Status = store.StatusNeedsReauth
		c.Failure = &store.Failure{Code: "invalid_grant", Attempts: 1, FirstAt: time.Now()}
		return c, nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	if out := e.mustCLI(t, "connections", "get", "c1"); !strings.Contains(out, "needs_reauth") || !strings.Contains(out, "connect-link") {
		t.Errorf("get of a needs_reauth connection:\n%s", out)
	}
	if code, _, errOut := e.cli(t, "connections", "refresh", "c1"); code != exitReauth || !strings.Contains(errOut, "reauth_required") {
		t.Errorf("refresh of a needs_reauth connection: exit %d, stderr %q", code, errOut)
	}

	if out := e.mustCLI(t, "connections", "delete", "c1"); !strings.Contains(out, "deleted c1") {
		t.Errorf("delete output %q", out)
	}
	for _, args := range [][]string{{"connections", "get", "c1"}, {"connections", "delete", "c1"}, {"connections", "refresh", "nope"}} {
		if code, _, _ := e.cli(t, args...); code != exitNotFound {
			t.Errorf("%v: exit %d, want %d", args, code, exitNotFound)
		}
	}
}

func TestCLIErrors(t *testing.T) {
	e := newCLIEnv(t)
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		code int
	}{
		{"no subcommand", []string{"connections"}, nil, exitUsage},
		{"unknown subcommand", []string{"connections", "frobnicate"}, nil, exitUsage},
		{"get without id", []string{"connections", "get"}, nil, exitUsage},
		{"get with two ids", []string{"connections", "get", "a", "b"}, nil, exitUsage},
		{"unknown flag", []string{"connections", "list", "--bogus"}, nil, exitUsage},
		{"connect-link without id", []string{"connections", "connect-link", "--provider", "acme"}, nil, exitUsage},
		{"import without tokens", []string{"connections", "import", "--id", "x", "--provider", "acme"}, map[string]string{envAccessToken: ""}, exitUsage},
		{"no api key", []string{"connections", "list"}, map[string]string{envAPIKey: ""}, exitUsage},
		{"bad url", []string{"connections", "list"}, map[string]string{envURL: "ftp://x"}, exitUsage},
		{"wrong key", []string{"connections", "list"}, map[string]string{envAPIKey: "tbk_not-a-real-key"}, exitFailure},
		{"server down", []string{"connections", "list"}, map[string]string{envURL: "http://127.0.0.1:1"}, exitFailure},
		{"unknown provider", []string{"connections", "connect-link", "--provider", "github", "--id", "x"}, nil, exitFailure},
		{"server refuses input", []string{"connections", "connect-link", "--provider", "nope", "--id", "x"}, nil, exitFailure},
		{"connect-link with provider and MCP server", []string{"connections", "connect-link", "--provider", "acme", "--mcp-server-url", "https://mcp.example/mcp", "--id", "x"}, nil, exitUsage},
		// Loopback is refused by the server's default host policy: the
		// URL reaches the server, which says why it cannot use it.
		{"MCP server refused", []string{"connections", "connect-link", "--mcp-server-url", "http://127.0.0.1:1/mcp", "--id", "x"}, nil, exitFailure},
		{"unknown providers command", []string{"providers", "frob"}, nil, exitUsage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			code, _, errOut := e.cli(t, tc.args...)
			if code != tc.code || errOut == "" {
				t.Errorf("exit %d (want %d), stderr %q", code, tc.code, errOut)
			}
			// An unknown provider names the configured ones and where
			// providers come from.
			if tc.name == "unknown provider" && (!strings.Contains(errOut, "configured: acme") || !strings.Contains(errOut, "providers:")) {
				t.Errorf("unknown provider error does not teach: %q", errOut)
			}
		})
	}
}

func TestCLIProviders(t *testing.T) {
	authz := authztest.New(t, authztest.Options{})
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	dir := t.TempDir()
	t.Setenv("CLI_TEST_PROV_SECRET", "fake-secret")
	cfgText := fmt.Sprintf(`listen: 127.0.0.1:0
data_dir: %[1]s
providers:
  - name: acme
    issuer: %[2]s
    client_id: c
    client_secret_env: CLI_TEST_PROV_SECRET
    scopes: [read]
  - name: nosecret
    token_url: %[2]s/oauth2/token
    client_id: c
    client_secret_env: CLI_TEST_UNSET_SECRET_VAR
  - name: unreachable
    issuer: %[3]s
    client_id: c
    client_secret_env: CLI_TEST_PROV_SECRET
  - name: static
    token_url: %[2]s/oauth2/token
    client_id: c
    client_secret_env: CLI_TEST_PROV_SECRET
`, dir, authz.Issuer, deadURL)
	cfgPath := filepath.Join(dir, "tb.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	run1 := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(t.Context(), args, &out, &errb)
		if strings.Contains(out.String()+errb.String(), "fake-secret") {
			t.Errorf("%v printed the client secret", args)
		}
		return code, out.String(), errb.String()
	}

	code, out, _ := run1("providers", "list", "--config", cfgPath)
	if code != 0 || !strings.Contains(out, "acme") || !strings.Contains(out, "CLI_TEST_UNSET_SECRET_VAR") {
		t.Errorf("list: exit %d\n%s", code, out)
	}

	code, out, errOut := run1("providers", "check", "--config", cfgPath, "--json")
	if code != exitFailure || !strings.Contains(errOut, "2 of 4 providers failed") {
		t.Errorf("check: exit %d, stderr %q", code, errOut)
	}
	var rep struct {
		Providers []providerReport `json:"providers"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("check --json: %v", err)
	}
	want := map[string]string{"acme": "ok", "nosecret": "failed", "unreachable": "failed", "static": "ok"}
	for _, r := range rep.Providers {
		if want[r.Name] != r.Status {
			t.Errorf("provider %s: %s (%s), want %s", r.Name, r.Status, r.Detail, want[r.Name])
		}
		// Each entry is reported at its own index, not providers[0].
		if r.Name == "nosecret" && !strings.Contains(r.Detail, "providers[1].client_secret_env") {
			t.Errorf("nosecret detail %q does not name providers[1]", r.Detail)
		}
		if r.Name == "acme" && r.TokenURL != authz.TokenURL() {
			t.Errorf("acme: discovered token URL %q, want %q", r.TokenURL, authz.TokenURL())
		}
	}
	if len(rep.Providers) != 4 {
		t.Errorf("%d providers reported, want 4", len(rep.Providers))
	}

	code, out, _ = run1("providers", "check", "--config", cfgPath)
	if code != exitFailure || !strings.Contains(out, "NAME") || !strings.Contains(out, "discovery ok") {
		t.Errorf("check table: exit %d\n%s", code, out)
	}
}
