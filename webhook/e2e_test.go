package webhook

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/authztest"
	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/seal"
	"github.com/tokenbroker/tokenbroker/store"
	"github.com/tokenbroker/tokenbroker/store/storetest"
)

// provider is a real authorization server and a broker in front of it.
type provider struct {
	srv  *authztest.Server
	ring *seal.KeyRing
}

func newProvider(t *testing.T) *provider {
	t.Helper()
	ring, _, err := seal.LoadOrCreate(filepath.Join(t.TempDir(), "keys"))
	if err != nil {
		t.Fatal(err)
	}
	return &provider{srv: authztest.New(t, authztest.Options{}), ring: ring}
}

// broker returns a broker on s with no in-process event sink: whatever
// reaches a webhook went through the store.
func (p *provider) broker(t *testing.T, s store.Backend) *broker.Broker {
	t.Helper()
	ep, err := oauth.NewEndpoint(oauth.Config{
		ClientID: p.srv.ClientID, ClientSecret: p.srv.ClientSecret, TokenURL: p.srv.TokenURL(),
		Retry: oauth.Backoff{MaxAttempts: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := broker.New(broker.Options{
		Store: s, Sealer: p.ring,
		Providers: map[string]broker.Provider{"acme": {Endpoint: ep}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// killGrant imports a real grant and makes its refresh fail with
// invalid_grant, which the broker records as needs_reauth.
func (p *provider) killGrant(t *testing.T, b *broker.Broker, id string) (access, refresh string) {
	t.Helper()
	access, refresh, _ = p.srv.IssueTokens(t, "offline")
	if _, err := b.CreateConnection(t.Context(), broker.Import{ID: id, Provider: "acme",
		AccessToken: access, RefreshToken: refresh, ExpiresIn: time.Hour}); err != nil {
		t.Fatalf("CreateConnection: %v", err)
	}
	p.srv.FailNext(1, http.StatusBadRequest, http.Header{"Content-Type": {"application/json"}},
		`{"error":"invalid_grant","error_description":"fake: grant revoked"}`)
	if _, err := b.RefreshConnection(t.Context(), id, nil); !errors.Is(err, oauth.ErrReauthRequired) {
		t.Fatalf("refresh answered invalid_grant returned %v, want ErrReauthRequired", err)
	}
	return access, refresh
}

// TestReauthRequiredWebhook: a connection whose refresh answers
// invalid_grant produces exactly one connection.reauth_required delivery,
// signed, carrying codes and no tokens.
func TestReauthRequiredWebhook(t *testing.T) {
	clk := storetest.NewClock(time.Now())
	s := openStore(t, filepath.Join(t.TempDir(), "tb.db"), nil)
	p := newProvider(t)
	b := p.broker(t, s)
	r := newReceiver(t, clk.Now)
	d := newDispatcher(t, s, clk, r, func(o *Options) {
		o.Endpoints[0].Events = []string{broker.EventReauthRequired}
	})

	access, refresh := p.killGrant(t, b, "conn-dead")
	// Asking again does not call the provider nor queue a second event.
	if _, err := b.RefreshConnection(t.Context(), "conn-dead", nil); !errors.Is(err, oauth.ErrReauthRequired) {
		t.Fatalf("second refresh: %v", err)
	}
	for deliverDue(t, d) > 0 {
	}

	got := r.verified()
	if len(got) != 1 {
		t.Fatalf("receiver got %d events, want exactly one", len(got))
	}
	e := got[0]
	if e.Type != broker.EventReauthRequired || e.Code != "invalid_grant" ||
		e.Connection.ID != "conn-dead" || e.Connection.Provider != "acme" || e.CreatedAt.IsZero() {
		t.Errorf("payload = %+v, want reauth_required for conn-dead at acme with code invalid_grant", e)
	}
	body := r.requests()[0].body
	for name, secret := range map[string]string{"access token": access, "refresh token": refresh,
		"provider's error text": "grant revoked", "client secret": p.srv.ClientSecret} {
		if bytes.Contains(body, []byte(secret)) {
			t.Errorf("the webhook body contains the %s", name)
		}
	}
	if n, _ := s.OutboxBacklog(t.Context()); n != 0 {
		t.Errorf("backlog = %d after delivery, want 0", n)
	}
}

// TestOutboxSurvivesRestart: the broker's writes queue events and the
// process "crashes" before any dispatcher runs; nothing in memory survives.
// A new process on the same database delivers them.
func TestOutboxSurvivesRestart(t *testing.T) {
	clk := storetest.NewClock(time.Now())
	path := filepath.Join(t.TempDir(), "tb.db")
	p := newProvider(t)

	first := openStore(t, path, nil)
	p.killGrant(t, p.broker(t, first), "conn-1")
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	reopened := openStore(t, path, nil)
	r := newReceiver(t, clk.Now)
	d := newDispatcher(t, reopened, clk, r, func(o *Options) { o.Owner = "after-restart" })
	for deliverDue(t, d) > 0 {
	}
	got := r.verified()
	var types []string
	for _, e := range got {
		types = append(types, e.Type)
	}
	// Deliveries run in parallel: arrival order is not guaranteed.
	slices.Sort(types)
	if fmt.Sprint(types) != fmt.Sprint([]string{broker.EventCreated, broker.EventReauthRequired}) {
		t.Errorf("after the restart the receiver got %v, want created and reauth_required", types)
	}
	history, err := reopened.ConnectionEvents(t.Context(), "conn-1", 0)
	if err != nil || len(history) != 2 || history[0].Type != broker.EventReauthRequired {
		t.Errorf("ConnectionEvents = %v, %v; want the two events, newest first", history, err)
	}
}
