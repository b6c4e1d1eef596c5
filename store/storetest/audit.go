package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/store"
)

var auditTests = []struct {
	name string
	fn   testFunc
}{
	{"AppendList", testAuditAppendList},
	{"Filters", testAuditFilters},
	{"Invalid", testAuditInvalid},
	{"Prune", testAuditPrune},
	{"KeyScopes", testAPIKeyScopes},
}

var sessionTests = []struct {
	name string
	fn   testFunc
}{
	{"Lifecycle", testUISessionLifecycle},
}

func testAuditAppendList(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	at := time.Date(2031, 1, 2, 3, 4, 5, 6000, time.FixedZone("X", 3600))
	in := []store.AuditEntry{
		{Time: at, Actor: "svc-a", ActorID: "k1", Action: "token.read", ConnectionID: "c-1", Outcome: "ok"},
		{Actor: "svc-b", ActorID: "k2", Action: "proxy", ConnectionID: "c-1", Outcome: "ok", Detail: "GET /v1/proxy/{id}/{path...} 200"},
	}
	if err := s.AppendAudit(ctx, in); err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}
	if err := s.AppendAudit(ctx, nil); err != nil {
		t.Fatalf("AppendAudit(nil): %v", err)
	}
	got, err := s.ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatalf("ListAudit: %v", err)
	}
	if len(got) != 2 {
		t.Fatalf("ListAudit: %d entries, want 2", len(got))
	}
	// Newest first.
	if got[0].Action != "proxy" || got[1].Action != "token.read" || got[0].ID <= got[1].ID {
		t.Errorf("ListAudit order: %q (id %d), %q (id %d); want proxy then token.read, ids decreasing",
			got[0].Action, got[0].ID, got[1].Action, got[1].ID)
	}
	want1 := in[1]
	want1.Time = clk.Now()
	for i, want := range []store.AuditEntry{want1, in[0]} {
		g := got[i]
		if !sameTime(g.Time, want.Time) || g.Time.Location() != time.UTC || g.Actor != want.Actor || g.ActorID != want.ActorID ||
			g.ConnectionID != want.ConnectionID || g.Outcome != want.Outcome || g.Detail != want.Detail {
			t.Errorf("entry %d = %+v, want %+v (time in UTC)", i, g, want)
		}
	}
}

func testAuditFilters(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	start := clk.Now()
	var in []store.AuditEntry
	for i := range 10 {
		conn := "c-even"
		if i%2 == 1 {
			conn = "c-odd"
		}
		action := "token.read"
		if i%3 == 0 {
			action = "refresh"
		}
		in = append(in, store.AuditEntry{Time: start.Add(time.Duration(i) * time.Minute), Actor: "a" + string(rune('0'+i%2)), Action: action, ConnectionID: conn, Outcome: "ok"})
	}
	if err := s.AppendAudit(ctx, in); err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}
	count := func(f store.AuditFilter) []store.AuditEntry {
		t.Helper()
		got, err := s.ListAudit(ctx, f)
		if err != nil {
			t.Fatalf("ListAudit(%+v): %v", f, err)
		}
		return got
	}
	if got := count(store.AuditFilter{ConnectionID: "c-odd"}); len(got) != 5 {
		t.Errorf("connection filter: %d entries, want 5", len(got))
	}
	if got := count(store.AuditFilter{Action: "refresh"}); len(got) != 4 {
		t.Errorf("action filter: %d entries, want 4", len(got))
	}
	if got := count(store.AuditFilter{Actor: "a0", Action: "refresh"}); len(got) != 2 {
		t.Errorf("actor+action filter: %d entries, want 2 (i=0,6)", len(got))
	}
	if got := count(store.AuditFilter{Since: start.Add(3 * time.Minute), Until: start.Add(6 * time.Minute)}); len(got) != 3 {
		t.Errorf("time window: %d entries, want 3", len(got))
	}
	if got := count(store.AuditFilter{ConnectionID: "c-missing"}); len(got) != 0 {
		t.Errorf("unknown connection: %d entries, want 0", len(got))
	}
	// Paging back by id visits every entry once.
	var seen []int64
	f := store.AuditFilter{Limit: 3}
	for {
		page := count(f)
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			seen = append(seen, e.ID)
		}
		f.BeforeID = page[len(page)-1].ID
	}
	if len(seen) != 10 || !slices.IsSortedFunc(seen, func(a, b int64) int { return int(b - a) }) {
		t.Errorf("paging: ids %v, want 10 in decreasing order", seen)
	}
	if _, err := s.ListAudit(ctx, store.AuditFilter{Limit: store.MaxAuditLimit + 1}); err == nil {
		t.Errorf("ListAudit with a limit above the maximum succeeded")
	}
}

func testAuditInvalid(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	long := make([]byte, 2000)
	for i := range long {
		long[i] = 'x'
	}
	err := s.AppendAudit(ctx, []store.AuditEntry{
		{Action: "token.read", ConnectionID: "c-1"},
		{Action: "proxy", Detail: string(long)},
	})
	if err == nil {
		t.Fatalf("AppendAudit with an overlong detail succeeded")
	}
	if err := s.AppendAudit(ctx, []store.AuditEntry{{Actor: "x"}}); err == nil {
		t.Errorf("AppendAudit without an action succeeded")
	}
	got, err := s.ListAudit(ctx, store.AuditFilter{})
	if err != nil || len(got) != 0 {
		t.Errorf("after rejected batches: %d entries, %v; want none (all or nothing)", len(got), err)
	}
}

func testAuditPrune(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	now := clk.Now()
	if err := s.AppendAudit(ctx, []store.AuditEntry{
		{Time: now.Add(-48 * time.Hour), Action: "old"},
		{Time: now.Add(-time.Hour), Action: "recent"},
	}); err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}
	n, err := s.PruneAudit(ctx, now.Add(-24*time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("PruneAudit = %d, %v; want 1", n, err)
	}
	got, err := s.ListAudit(ctx, store.AuditFilter{})
	if err != nil || len(got) != 1 || got[0].Action != "recent" {
		t.Errorf("after prune: %+v, %v; want only the recent entry", got, err)
	}
}

func testAPIKeyScopes(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	k := store.APIKey{ID: "key-s", Name: "team a", Scope: "proxy", Hash: keyHash("fake-scoped"),
		Connections: []string{"team-a-*", "shared"}, Providers: []string{"github"}}
	if err := s.CreateAPIKey(ctx, k); err != nil {
		t.Fatalf("CreateAPIKey: %v", err)
	}
	got, err := s.GetAPIKeyByHash(ctx, k.Hash)
	if err != nil {
		t.Fatalf("GetAPIKeyByHash: %v", err)
	}
	if !slices.Equal(got.Connections, k.Connections) || !slices.Equal(got.Providers, k.Providers) {
		t.Errorf("scopes = %q / %q, want %q / %q", got.Connections, got.Providers, k.Connections, k.Providers)
	}
	plain := store.APIKey{ID: "key-p", Name: "all", Scope: "tokens", Hash: keyHash("fake-plain")}
	if err := s.CreateAPIKey(ctx, plain); err != nil {
		t.Fatalf("CreateAPIKey: %v", err)
	}
	keys, err := s.ListAPIKeys(ctx)
	if err != nil {
		t.Fatalf("ListAPIKeys: %v", err)
	}
	for _, g := range keys {
		if g.ID == "key-p" && (g.Connections != nil || g.Providers != nil) {
			t.Errorf("unscoped key came back with scopes %q / %q, want nil", g.Connections, g.Providers)
		}
		if g.ID == "key-s" && !slices.Equal(g.Connections, k.Connections) {
			t.Errorf("ListAPIKeys lost the scopes: %q", g.Connections)
		}
	}
}

func testUISessionLifecycle(t *testing.T, s store.Backend, clk *Clock) {
	ctx := t.Context()
	now := clk.Now()
	for _, us := range []store.UISession{
		{ID: "s1", KeyID: "k1", ExpiresAt: now.Add(time.Hour)},
		{ID: "s2", KeyID: "k1", ExpiresAt: now.Add(time.Hour)},
		{ID: "s3", KeyID: "k2", ExpiresAt: now.Add(2 * time.Hour)},
	} {
		if err := s.CreateUISession(ctx, us); err != nil {
			t.Fatalf("CreateUISession(%s): %v", us.ID, err)
		}
	}
	if err := s.CreateUISession(ctx, store.UISession{ID: "s1", KeyID: "k9", ExpiresAt: now.Add(time.Hour)}); !errors.Is(err, store.ErrAlreadyExists) {
		t.Errorf("CreateUISession(duplicate): %v, want ErrAlreadyExists", err)
	}
	if err := s.CreateUISession(ctx, store.UISession{ID: "s9"}); err == nil {
		t.Errorf("CreateUISession without key and expiry succeeded")
	}
	got, err := s.GetUISession(ctx, "s1")
	if err != nil || got.KeyID != "k1" || !sameTime(got.ExpiresAt, now.Add(time.Hour)) || !sameTime(got.CreatedAt, now) {
		t.Fatalf("GetUISession(s1) = %+v, %v", got, err)
	}
	if err := s.DeleteUISession(ctx, "s1"); err != nil {
		t.Fatalf("DeleteUISession: %v", err)
	}
	if err := s.DeleteUISession(ctx, "s1"); err != nil {
		t.Errorf("DeleteUISession twice: %v", err)
	}
	if _, err := s.GetUISession(ctx, "s1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetUISession after delete: %v, want ErrNotFound", err)
	}
	if n, err := s.DeleteKeyUISessions(ctx, "k1"); err != nil || n != 1 {
		t.Errorf("DeleteKeyUISessions(k1) = %d, %v; want 1", n, err)
	}
	if _, err := s.GetUISession(ctx, "s2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetUISession(s2) after key revocation: %v, want ErrNotFound", err)
	}
	clk.Advance(90 * time.Minute)
	if _, err := s.GetUISession(ctx, "s3"); err != nil {
		t.Errorf("GetUISession(s3) before expiry: %v", err)
	}
	clk.Advance(time.Hour)
	if _, err := s.GetUISession(ctx, "s3"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetUISession(s3) after expiry: %v, want ErrNotFound", err)
	}
	if n, err := s.PruneUISessions(ctx); err != nil || n != 1 {
		t.Errorf("PruneUISessions = %d, %v; want 1", n, err)
	}
}
