package ui_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/app"
	"github.com/tokenbroker/tokenbroker/internal/authztest"
	"github.com/tokenbroker/tokenbroker/store"
)

// chromiumPath finds the machine's Chromium. In CI (CI set) a missing
// browser fails the test; elsewhere it is skipped with the reason.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/chromium", "chromium", "chromium-browser"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	msg := "chromium is not installed (apt-get install -y chromium; scripts/test.sh does it)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// artifactDir is where screenshots go: $TOKENBROKER_TEST_ARTIFACTS, or a
// temporary directory.
func artifactDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("TOKENBROKER_TEST_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

var bootstrapKeyRe = regexp.MustCompile(`tbk_[A-Za-z0-9_-]+`)

// browserApp runs the whole tokenbroker in-process, as `serve` does: real
// SQLite, the real broker, a fosite authorization server as the provider.
type browserApp struct {
	a     *app.App
	base  string
	key   string
	authz *authztest.Server
	// secrets are the token values issued in the test, which no page may
	// show.
	secrets []string
}

func startApp(t *testing.T) *browserApp {
	t.Helper()
	dir := t.TempDir()
	authz := authztest.New(t, authztest.Options{AccessTokenLifespan: time.Hour})
	t.Setenv("UI_ACME_SECRET", authz.ClientSecret)
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
data_dir: %[1]s
database: sqlite:%[1]s/tokenbroker.db
encryption_keys_file: %[1]s/keys
public_url: https://tb.example
providers:
  - name: acme
    token_url: %[2]s
    client_id: %[3]s
    client_secret_env: UI_ACME_SECRET
    refresh_window: 5m
  - name: globex
    token_url: %[2]s
    authorize_url: %[4]s
    client_id: %[3]s
    client_secret_env: UI_ACME_SECRET
`, dir, authz.TokenURL(), authz.ClientID, authz.AuthorizeURL())
	cfgPath := filepath.Join(dir, "tokenbroker.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.New(t.Context(), c, app.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := a.BootstrapAPIKey(t.Context(), &out, time.Now()); err != nil {
		t.Fatal(err)
	}
	key := bootstrapKeyRe.FindString(out.String())
	if key == "" {
		t.Fatal("no bootstrap key was printed")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.ServeListener(ctx, ln, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
		a.Close()
	})
	return &browserApp{a: a, base: "http://" + ln.Addr().String(), key: key, authz: authz}
}

func (b *browserApp) importConnection(t *testing.T, id, provider string) {
	t.Helper()
	access, refresh, _ := b.authz.IssueTokens(t, "offline")
	b.secrets = append(b.secrets, access, refresh)
	if _, err := b.a.Broker.CreateConnection(t.Context(), broker.Import{
		ID: id, Provider: provider, AccessToken: access, RefreshToken: refresh, ExpiresIn: time.Hour,
	}); err != nil {
		t.Fatal(err)
	}
}

// TestBrowser drives the dashboard in headless Chromium: sign in, see a
// failing and a dead connection marked as such, press "Refresh now" once
// the provider recovers and see the connection turn active.
func TestBrowser(t *testing.T) {
	chromium := chromiumPath(t)
	shots := artifactDir(t)
	b := startApp(t)

	b.importConnection(t, "alice", "acme")
	b.importConnection(t, "bob", "globex")
	b.importConnection(t, "carol", "acme")
	// alice's provider is down: a transient failure, still active. (The
	// endpoint retries transient failures itself; enough are armed for all
	// its attempts, and the rest disarmed after.)
	b.authz.FailNext(10, http.StatusServiceUnavailable, nil, `{"error":"temporarily_unavailable","error_description":"scheduled maintenance"}`)
	if _, err := b.a.Broker.RefreshConnection(t.Context(), "alice", nil); err == nil {
		t.Fatal("the refresh against a failing provider succeeded")
	}
	b.authz.FailNext(0, http.StatusServiceUnavailable, nil, "")
	// bob's grant was revoked by the user: terminal.
	b.authz.FailNext(1, http.StatusBadRequest, http.Header{"Content-Type": {"application/json"}}, `{"error":"invalid_grant","error_description":"the user revoked access"}`)
	if _, err := b.a.Broker.RefreshConnection(t.Context(), "bob", nil); err == nil {
		t.Fatal("the refresh with a revoked grant succeeded")
	}
	for id, want := range map[string]store.Status{"alice": store.StatusActive, "bob": store.StatusNeedsReauth} {
		c, err := b.a.Store.GetConnection(t.Context(), id)
		if err != nil || c.Status != want || c.Failure == nil {
			t.Fatalf("%s before the browser: status %q, failure %v, err %v", id, c.Status, c.Failure != nil, err)
		}
	}

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 860),
	)
	// Registered after the user-data-dir's cleanup, so it runs first: the
	// browser is gone before its directory is removed.
	t.Cleanup(cancelAlloc)
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancelTab)
	// A guard against a hung browser, not a performance assertion.
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return strings.TrimSpace(v)
	}
	attr := func(sel, name string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS(sel), name))
		if err != nil {
			t.Fatalf("attribute %s of %s: %v", name, sel, err)
		}
		return v.Value
	}
	shot := func(name string) {
		t.Helper()
		html, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
		if err != nil {
			t.Fatalf("page of %s: %v", name, err)
		}
		for _, s := range append([]string{b.key}, b.secrets...) {
			if strings.Contains(html, s) {
				t.Errorf("%s: the page shows a secret (%d bytes)", name, len(s))
			}
		}
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		path := filepath.Join(shots, name)
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", path)
	}

	// Sign in: the dashboard sends a browser without a session there.
	do("open the dashboard", chromedp.Navigate(b.base+"/ui/"), chromedp.WaitVisible(chromedp.ID("api_key")))
	if loc, err := chromedp.Run(ctx, chromedp.Location()); err != nil || !strings.Contains(loc, "/ui/signin") {
		t.Errorf("without a session the browser is at %q (%v), want the sign-in page", loc, err)
	}
	shot("ui-signin.png")
	do("sign in",
		chromedp.SendKeys(chromedp.ID("api_key"), b.key),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.ID("connections")),
	)
	shot("ui-connections.png")
	for id, want := range map[string]string{"alice": "failing", "bob": "reauth", "carol": "ok"} {
		if got := attr(`tr[data-id="`+id+`"]`, "data-status"); got != want {
			t.Errorf("list: %s is marked %q, want %q", id, got, want)
		}
	}
	if got := text(`tr[data-id="alice"] .badge`); got != "Failing" {
		t.Errorf("list: alice's badge says %q, want Failing", got)
	}

	// alice's page shows the failure; the provider has recovered (no
	// failure is pending), so Refresh now works.
	do("open alice", chromedp.Click(chromedp.CSS(`tr[data-id="alice"] a`)), chromedp.WaitVisible(chromedp.ID("failure")))
	if got := text("#status"); got != "Failing" {
		t.Errorf("alice's page before the refresh: status %q, want Failing", got)
	}
	if got := text("#failure"); !strings.Contains(got, "scheduled maintenance") {
		t.Errorf("alice's failure record does not show the provider's message: %q", got)
	}
	shot("ui-detail-failing.png")
	calls := b.authz.RefreshCalls()
	do("refresh now", chromedp.Click(chromedp.ID("refresh")), chromedp.WaitVisible(chromedp.CSS(".banner-ok")))
	if got := text("#status"); got != "Active" {
		t.Errorf("after Refresh now: status %q, want Active", got)
	}
	if got := text(".banner-ok"); !strings.Contains(got, "Refreshed") {
		t.Errorf("after Refresh now: banner %q", got)
	}
	shot("ui-detail-refreshed.png")
	if n := b.authz.RefreshCalls() - calls; n != 1 {
		t.Errorf("Refresh now made %d provider calls, want 1", n)
	}
	c, err := b.a.Store.GetConnection(t.Context(), "alice")
	if err != nil || c.Status != store.StatusActive || c.Failure != nil {
		t.Errorf("alice after Refresh now: status %q, failure %v, err %v", c.Status, c.Failure != nil, err)
	}

	// Back on the list the row has turned healthy.
	do("list again", chromedp.Navigate(b.base+"/ui/"), chromedp.WaitVisible(chromedp.ID("connections")))
	if got := attr(`tr[data-id="alice"]`, "data-status"); got != "ok" {
		t.Errorf("list after Refresh now: alice is marked %q, want ok", got)
	}
	// The dead connection in dark mode, for the record.
	if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}},
	}); err != nil {
		t.Fatalf("dark mode: %v", err)
	}
	do("open bob", chromedp.Navigate(b.base+"/ui/connections/bob"), chromedp.WaitVisible(chromedp.ID("failure")))
	if got := text("#status"); got != "Needs reauth" {
		t.Errorf("bob's page: status %q, want Needs reauth", got)
	}
	// A person must reconnect bob: the dashboard makes the link.
	do("reconnect link", chromedp.Click(chromedp.ID("reconnect")), chromedp.WaitVisible(chromedp.ID("reconnect-link")))
	link, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID("reconnect-link")))
	if err != nil || !strings.HasPrefix(link, "https://tb.example/v1/connect/") {
		t.Errorf("reconnect link %q (%v), want one under https://tb.example/v1/connect/", link, err)
	}
	shot("ui-detail-reauth-dark.png")

	// An API key for a service that only calls the API, limited to team a.
	do("keys page", chromedp.Navigate(b.base+"/ui/keys"), chromedp.WaitVisible(chromedp.ID("keys")))
	do("create a proxy key",
		chromedp.SendKeys(chromedp.ID("k-name"), "billing-browser"),
		chromedp.SendKeys(chromedp.ID("k-conns"), "team-a-*"),
		chromedp.Click(chromedp.ID("create-key")),
		chromedp.WaitVisible(chromedp.ID("new-key-secret")),
	)
	secret := text("#new-key-secret")
	if !strings.HasPrefix(secret, "tbk_") {
		t.Fatalf("the new key is not shown: %q", secret)
	}
	b.secrets = append(b.secrets, secret)
	keys, err := b.a.Store.ListAPIKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, k := range keys {
		if k.Name == "billing-browser" {
			found = k.Scope == "proxy" && len(k.Connections) == 1 && k.Connections[0] == "team-a-*"
		}
	}
	if !found {
		t.Errorf("the key made in the browser is not a proxy key for team-a-*: %+v", keys)
	}
	do("keys list", chromedp.Navigate(b.base+"/ui/keys"), chromedp.WaitVisible(chromedp.ID("keys")))
	shot("ui-keys.png")
}

// TestBrowserPhoneWidth opens the dashboard on a 390px-wide phone screen:
// the page never scrolls sideways (the header wraps, the table scrolls
// inside its own box), and the header's controls stay on screen.
func TestBrowserPhoneWidth(t *testing.T) {
	chromium := chromiumPath(t)
	shots := artifactDir(t)
	b := startApp(t)
	b.importConnection(t, "alice-with-a-rather-long-connection-id@example.com", "acme")
	b.importConnection(t, "bob", "globex")

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(390, 844),
	)
	t.Cleanup(cancelAlloc)
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancelTab)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := chromedp.Call(ctx, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{
		Width: 390, Height: 844, DeviceScaleFactor: 2, Mobile: true,
	}); err != nil {
		t.Fatalf("phone metrics: %v", err)
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	// check measures the page: it must not be wider than the screen, the
	// sign-out button must be on screen, and a table wider than its box
	// must be scrollable within it.
	check := func(page string) {
		t.Helper()
		got, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]any](`(() => {
			const w = window.innerWidth, doc = document.documentElement.scrollWidth;
			const out = {inner: w, doc: doc, signout: 0, tableOK: true};
			const so = document.querySelector('form[action="/ui/signout"] button');
			if (so) out.signout = so.getBoundingClientRect().right;
			const wrap = document.querySelector('.table-wrap'), table = wrap && wrap.querySelector('table');
			if (wrap && table && table.scrollWidth > wrap.clientWidth) {
				const ox = getComputedStyle(wrap).overflowX;
				out.tableOK = ox === 'auto' || ox === 'scroll';
			}
			return out;
		})()`))
		if err != nil {
			t.Fatalf("%s: measure: %v", page, err)
		}
		inner, doc, signout := got["inner"].(float64), got["doc"].(float64), got["signout"].(float64)
		if inner != 390 {
			t.Errorf("%s: the viewport is %vpx wide, want 390", page, inner)
		}
		if doc > inner {
			t.Errorf("%s: the page is %vpx wide on a %vpx screen: it scrolls sideways", page, doc, inner)
		}
		if signout == 0 || signout > inner {
			t.Errorf("%s: the sign-out button ends at %vpx, off a %vpx screen", page, signout, inner)
		}
		if got["tableOK"] != true {
			t.Errorf("%s: the table is wider than its box and cannot scroll", page)
		}
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(90))
		if err != nil {
			t.Fatalf("%s: screenshot: %v", page, err)
		}
		path := filepath.Join(shots, "ui-phone-"+page+".png")
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", path)
	}
	do("sign in",
		chromedp.Navigate(b.base+"/ui/"), chromedp.WaitVisible(chromedp.ID("api_key")),
		chromedp.SendKeys(chromedp.ID("api_key"), b.key),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.ID("connections")),
	)
	check("list")
	do("open a connection", chromedp.Navigate(b.base+"/ui/connections/alice-with-a-rather-long-connection-id@example.com"), chromedp.WaitVisible(chromedp.ID("status")))
	check("detail")
}
