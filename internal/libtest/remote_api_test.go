package libtest

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/client/remote"
	"github.com/tokenbroker/tokenbroker/internal/authztest"
	"github.com/tokenbroker/tokenbroker/oauth"
)

// Every method of remote.Client against a real tokenbroker process, and
// the API's errors as the library's sentinels.
func TestRemoteClientAgainstServer(t *testing.T) {
	authz := authztest.New(t, authztest.Options{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusTeapot) // the provider's own answer, passed through
		_, _ = io.WriteString(w, "from upstream "+r.URL.Path)
	}))
	t.Cleanup(upstream.Close)
	srv := startServer(t, authz, upstream.URL)
	ctx := t.Context()
	admin := srv.client(t, srv.key)
	tokens := srv.client(t, srv.newKey(t, "tokens"))

	if err := admin.Healthz(ctx); err != nil {
		t.Errorf("Healthz: %v", err)
	}
	if err := admin.Ready(ctx); err != nil {
		t.Errorf("Ready: %v", err)
	}
	if doc, err := tokens.OpenAPI(ctx); err != nil || !strings.Contains(string(doc), `"openapi"`) {
		t.Errorf("OpenAPI: %v", err)
	}
	if m, err := admin.Metrics(ctx); err != nil || len(m) == 0 {
		t.Errorf("Metrics: %v", err)
	}
	if _, err := tokens.Metrics(ctx); !errors.Is(err, remote.ErrForbidden) {
		t.Errorf("Metrics with a tokens key: %v, want ErrForbidden", err)
	}

	access, refresh, _ := authz.IssueTokens(t, "read")
	c, err := admin.CreateConnection(ctx, remote.ImportRequest{ID: "alice", Provider: "acme",
		AccessToken: access, RefreshToken: refresh, ExpiresIn: 3600, Metadata: []byte(`{"team":"a"}`)})
	if err != nil || c.ID != "alice" || c.Status != remote.StatusActive || !c.HasRefreshToken || c.ExpiresAt == nil {
		t.Fatalf("CreateConnection: %+v, %v", c, err)
	}
	if _, err := admin.CreateConnection(ctx, remote.ImportRequest{ID: "alice", Provider: "acme", AccessToken: access}); !errors.Is(err, remote.ErrAlreadyExists) {
		t.Errorf("duplicate CreateConnection: %v, want ErrAlreadyExists", err)
	}
	var re *remote.Error
	if _, err := admin.CreateConnection(ctx, remote.ImportRequest{ID: "bob", Provider: "nope", AccessToken: "x"}); !errors.Is(err, remote.ErrInvalidRequest) ||
		!errors.As(err, &re) || re.StatusCode != http.StatusBadRequest || re.Message == "" {
		t.Errorf("CreateConnection of an unknown provider: %v, want ErrInvalidRequest with a message", err)
	}
	if list, err := admin.ListConnections(ctx, remote.ListOptions{Provider: "acme", Status: remote.StatusActive, Limit: 10}); err != nil ||
		len(list.Connections) != 1 || list.Connections[0].ID != "alice" {
		t.Errorf("ListConnections: %+v, %v", list, err)
	}
	if _, err := tokens.ListConnections(ctx, remote.ListOptions{}); !errors.Is(err, remote.ErrForbidden) {
		t.Errorf("ListConnections with a tokens key: %v, want ErrForbidden", err)
	}

	// The bulk import: all or none, errors naming the item.
	batch := []remote.ImportRequest{
		{ID: "carol", Provider: "acme", AccessToken: "at-carol", ExpiresIn: 3600},
		{ID: "dave", Provider: "acme", AccessToken: "at-dave", ExpiresIn: 3600},
	}
	if n, err := admin.CreateConnections(ctx, batch); err != nil || n != 2 {
		t.Errorf("CreateConnections: %d, %v; want 2 created", n, err)
	}
	batch = []remote.ImportRequest{{ID: "erin", Provider: "acme", AccessToken: "x"}, {ID: "alice", Provider: "acme", AccessToken: "x"}}
	if _, err := admin.CreateConnections(ctx, batch); !errors.Is(err, remote.ErrAlreadyExists) || !errors.As(err, &re) || !strings.Contains(re.Message, `connections[1] (id "alice")`) {
		t.Errorf("CreateConnections with a taken id: %v, want ErrAlreadyExists naming item 1", err)
	}
	if _, err := admin.GetConnection(ctx, "erin"); !errors.Is(err, remote.ErrNotFound) {
		t.Errorf("erin after a refused batch: %v, want ErrNotFound", err)
	}
	if _, err := tokens.CreateConnections(ctx, batch[:1]); !errors.Is(err, remote.ErrForbidden) {
		t.Errorf("CreateConnections with a tokens key: %v, want ErrForbidden", err)
	}
	if got, err := tokens.GetConnection(ctx, "alice"); err != nil || got.Provider != "acme" {
		t.Errorf("GetConnection: %+v, %v", got, err)
	}
	if _, err := tokens.GetConnection(ctx, "nobody"); !errors.Is(err, remote.ErrNotFound) {
		t.Errorf("GetConnection of a missing id: %v, want ErrNotFound", err)
	}
	tok, err := tokens.Token(ctx, "alice")
	if err != nil || tok.AccessToken != access || tok.TokenType != "Bearer" || tok.ExpiresAt == nil {
		t.Fatalf("Token: the imported token? %v", err)
	}
	fresh, err := tokens.ReportStale(ctx, "alice", access)
	if err != nil || fresh.AccessToken == access || authz.RefreshCalls() != 1 {
		t.Fatalf("ReportStale: new token %v, %d refreshes, %v", err == nil && fresh.AccessToken != access, authz.RefreshCalls(), err)
	}
	if c, err := admin.RefreshConnection(ctx, "alice"); err != nil || c.LastRefreshAt == nil || authz.RefreshCalls() != 2 {
		t.Errorf("RefreshConnection: %v, %d refreshes", err, authz.RefreshCalls())
	}
	if _, err := tokens.RefreshConnection(ctx, "alice"); !errors.Is(err, remote.ErrForbidden) {
		t.Errorf("RefreshConnection with a tokens key: %v, want ErrForbidden", err)
	}

	resp, err := tokens.Proxy(ctx, http.MethodGet, "alice", "/v2/things", nil, http.Header{"X-Custom": {"1"}})
	if err != nil {
		t.Fatalf("Proxy: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTeapot || string(body) != "from upstream /v2/things" {
		t.Errorf("Proxy: HTTP %d %q, want the upstream's 418", resp.StatusCode, body)
	}
	if _, err := tokens.Proxy(ctx, http.MethodGet, "nobody", "x", nil, nil); !errors.Is(err, remote.ErrNotFound) {
		t.Errorf("Proxy to a missing connection: %v, want ErrNotFound (the server's answer, not the provider's)", err)
	}

	sess, err := admin.CreateConnectSession(ctx, remote.ConnectSessionRequest{ConnectionID: "carol", Provider: "acme"})
	if err != nil || sess.ID == "" || sess.URL == "" {
		t.Fatalf("CreateConnectSession: %+v, %v", sess, err)
	}
	link := admin.ConnectStartURL(sess.ID)
	if !strings.HasPrefix(link, srv.base+"/v1/connect/") {
		t.Errorf("ConnectStartURL = %q", link)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if r, err := noRedirect.Get(link); err != nil || r.StatusCode != http.StatusFound || !strings.HasPrefix(r.Header.Get("Location"), authz.AuthorizeURL()) {
		t.Errorf("GET ConnectStartURL: %v; want a redirect to the authorization server", err)
	} else {
		r.Body.Close()
	}
	if u := admin.ConnectCallbackURL(); u != srv.base+"/v1/connect/callback" {
		t.Errorf("ConnectCallbackURL = %q", u)
	}

	// The provider refuses the refresh for good: reauth_required is the
	// library's ErrReauthRequired.
	authz.FailNext(1, http.StatusBadRequest, http.Header{"Content-Type": {"application/json"}}, `{"error":"invalid_grant"}`)
	_, err = admin.RefreshConnection(ctx, "alice")
	if !errors.Is(err, oauth.ErrReauthRequired) || !oauth.Terminal(err) {
		t.Errorf("refused refresh: %v, want errors.Is(err, oauth.ErrReauthRequired)", err)
	}
	if _, err := tokens.Token(ctx, "alice"); !errors.Is(err, oauth.ErrReauthRequired) {
		t.Errorf("Token of a dead connection: %v, want ErrReauthRequired", err)
	}
	if d, err := admin.DeleteConnection(ctx, "alice"); err != nil || !d.Deleted {
		t.Errorf("DeleteConnection: %+v, %v", d, err)
	}

	// A provider outage: provider_unavailable is transient, with the
	// server's Retry-After.
	access, refresh, _ = authz.IssueTokens(t, "read")
	if _, err := admin.PutConnection(ctx, "dave", remote.ImportRequest{Provider: "acme", AccessToken: access, RefreshToken: refresh, ExpiresIn: 3600}); err != nil {
		t.Fatalf("PutConnection: %v", err)
	}
	authz.FailNext(5, http.StatusServiceUnavailable, http.Header{"Retry-After": {"120"}}, "down")
	_, err = admin.RefreshConnection(ctx, "dave")
	if !errors.Is(err, oauth.ErrTransient) || oauth.Terminal(err) || oauth.RetryAfter(err) <= 0 {
		t.Errorf("outage: %v (retry after %v), want errors.Is(err, oauth.ErrTransient) with a Retry-After", err, oauth.RetryAfter(err))
	}

	bad, err := remote.New(remote.Config{BaseURL: srv.base, APIKey: "tbk_not-a-key"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Token(ctx, "dave"); !errors.Is(err, remote.ErrUnauthenticated) {
		t.Errorf("a wrong key: %v, want ErrUnauthenticated", err)
	}
}
