package storetest

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/fakeclock"
	"github.com/tokenbroker/tokenbroker/store"
)

// NewStore returns a new, empty store that takes every time it records or
// compares from now. The suite closes the store when the test ends and may
// close it earlier, so Close must tolerate a second call.
type NewStore func(t *testing.T, now func() time.Time) store.Backend

// Clock is the settable clock the suite hands to backends.
type Clock = fakeclock.Clock

// NewClock returns a clock that reads start until advanced.
func NewClock(start time.Time) *Clock { return fakeclock.New(start) }

// start has nanoseconds so that a backend that keeps only microseconds is
// exercised by every store-set timestamp.
var start = time.Date(2031, time.March, 4, 5, 6, 7, 891234567, time.UTC)

type testFunc func(t *testing.T, s store.Backend, clk *Clock)

// RunTests runs the conformance suite against the stores newStore returns,
// one fresh store per subtest. Subtests run one after another, so a backend
// may share one database between them as long as each store starts empty.
func RunTests(t *testing.T, newStore NewStore) {
	groups := []struct {
		name  string
		tests []struct {
			name string
			fn   testFunc
		}
	}{
		{"Connection", connectionTests},
		{"Batch", batchTests},
		{"List", listTests},
		{"Lease", leaseTests},
		{"APIKey", apiKeyTests},
		{"Concurrency", concurrencyTests},
		{"Connect", connectTests},
		{"Outbox", outboxTests},
		{"Count", countTests},
		{"Scheduling", schedulingTests},
		{"Keys", keyTests},
		{"Audit", auditTests},
		{"Sessions", sessionTests},
		{"MCP", mcpTests},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			for _, tc := range g.tests {
				t.Run(tc.name, func(t *testing.T) {
					clk := NewClock(start)
					s := newStore(t, clk.Now)
					t.Cleanup(func() { _ = s.Close() })
					tc.fn(t, s, clk)
				})
			}
		})
	}
}

// sealed returns deterministic fake "ciphertext" that contains every byte
// value, NULs and invalid UTF-8 included, so a backend that stores tokens as
// text or trims them fails.
func sealed(label string, n int) []byte {
	b := make([]byte, 0, n+len(label)+1)
	b = append(b, label...)
	b = append(b, 0)
	for i := 0; len(b) < n+len(label)+1; i++ {
		b = append(b, byte(i*7+len(label)))
	}
	return b
}

// fullConnection sets every field a caller may set, with times in a non-UTC
// zone and with nanoseconds.
func fullConnection(id string, now time.Time) store.Connection {
	zone := time.FixedZone("UTC+05:30", 5*3600+1800)
	at := func(d time.Duration) time.Time { return now.Add(d).In(zone) }
	return store.Connection{
		ID:                   id,
		Provider:             "acme",
		Status:               store.StatusActive,
		AccessToken:          sealed("fake-access-"+id, 300),
		RefreshToken:         sealed("fake-refresh-"+id, 300),
		TokenType:            "Bearer",
		Scope:                "read write offline_access",
		ExpiresAt:            at(time.Hour + 3),
		ExpiryDefaulted:      true,
		RefreshExpiresAt:     at(30*24*time.Hour + 5),
		RefreshHardExpiresAt: time.Date(2200, time.January, 2, 3, 4, 5, 678901234, zone),
		LastRefreshAt:        at(-time.Minute + 7),
		LastUsedAt:           at(-time.Second + 11),
		NextRefreshAt:        at(50*time.Minute + 19),
		IssuedAt:             at(-time.Minute + 23),
		OnErrorRefreshAt:     at(-time.Minute + 29),
		RefreshStartedAt:     at(-time.Second + 31),
		Failure: &store.Failure{
			Code:          "http_503",
			Message:       "upstream said: try later (fake)",
			Attempts:      3,
			FirstAt:       at(-10*time.Minute + 13),
			NextAttemptAt: at(2*time.Minute + 17),
		},
		Metadata: json.RawMessage(`{"tenant": "t-1", "n": 0, "tags": ["a", "b"], "nested": {"ok": true}}`),
	}
}

// minimalConnection leaves every optional field empty.
func minimalConnection(id string) store.Connection {
	return store.Connection{
		ID:          id,
		Provider:    "acme",
		Status:      store.StatusActive,
		AccessToken: sealed("fake-access-"+id, 40),
	}
}

// sameTime reports whether got is want as a store keeps it: zero stays zero;
// anything else comes back in UTC and within a microsecond.
func sameTime(got, want time.Time) bool {
	if want.IsZero() {
		return got.IsZero()
	}
	d := got.Sub(want)
	return got.Location() == time.UTC && d > -time.Microsecond && d < time.Microsecond
}

func sameFailure(got, want *store.Failure) bool {
	if got == nil || want == nil {
		return got == nil && want == nil
	}
	return got.Code == want.Code && got.Message == want.Message &&
		got.Attempts == want.Attempts &&
		sameTime(got.FirstAt, want.FirstAt) && sameTime(got.NextAttemptAt, want.NextAttemptAt)
}

// sameJSON compares documents by meaning, so a backend may normalise
// whitespace or key order (PostgreSQL jsonb does).
func sameJSON(got, want json.RawMessage) bool {
	if len(want) == 0 {
		return len(got) == 0
	}
	if len(got) == 0 {
		return false
	}
	var g, w any
	if json.Unmarshal(got, &g) != nil || json.Unmarshal(want, &w) != nil {
		return false
	}
	return reflect.DeepEqual(g, w)
}

// dataDiff names the caller-owned fields where got differs from want. It
// never includes values: token bytes must not reach test output.
func dataDiff(got, want store.Connection) []string {
	var d []string
	check := func(ok bool, name string) {
		if !ok {
			d = append(d, name)
		}
	}
	check(got.ID == want.ID, "ID")
	check(got.Provider == want.Provider, "Provider")
	check(got.Status == want.Status, "Status")
	check(bytes.Equal(got.AccessToken, want.AccessToken), "AccessToken")
	check(bytes.Equal(got.RefreshToken, want.RefreshToken) && (got.RefreshToken == nil) == (want.RefreshToken == nil), "RefreshToken")
	check(got.TokenType == want.TokenType, "TokenType")
	check(got.Scope == want.Scope, "Scope")
	check(sameTime(got.ExpiresAt, want.ExpiresAt), "ExpiresAt")
	check(got.ExpiryDefaulted == want.ExpiryDefaulted, "ExpiryDefaulted")
	check(sameTime(got.RefreshExpiresAt, want.RefreshExpiresAt), "RefreshExpiresAt")
	check(sameTime(got.RefreshHardExpiresAt, want.RefreshHardExpiresAt), "RefreshHardExpiresAt")
	check(sameTime(got.LastRefreshAt, want.LastRefreshAt), "LastRefreshAt")
	check(sameTime(got.LastUsedAt, want.LastUsedAt), "LastUsedAt")
	check(sameTime(got.NextRefreshAt, want.NextRefreshAt), "NextRefreshAt")
	check(sameTime(got.IssuedAt, want.IssuedAt), "IssuedAt")
	check(sameTime(got.OnErrorRefreshAt, want.OnErrorRefreshAt), "OnErrorRefreshAt")
	check(sameTime(got.RefreshStartedAt, want.RefreshStartedAt), "RefreshStartedAt")
	check(sameFailure(got.Failure, want.Failure), "Failure")
	check(sameJSON(got.Metadata, want.Metadata), "Metadata")
	return d
}

// fullDiff also compares the store-owned fields.
func fullDiff(got, want store.Connection) []string {
	d := dataDiff(got, want)
	check := func(ok bool, name string) {
		if !ok {
			d = append(d, name)
		}
	}
	check(got.Version == want.Version, "Version")
	check(got.Incarnation == want.Incarnation, "Incarnation")
	check(got.LeaseOwner == want.LeaseOwner, "LeaseOwner")
	check(sameTime(got.LeaseUntil, want.LeaseUntil), "LeaseUntil")
	check(sameTime(got.CreatedAt, want.CreatedAt), "CreatedAt")
	check(sameTime(got.UpdatedAt, want.UpdatedAt), "UpdatedAt")
	return d
}

func expectData(t *testing.T, what string, got, want store.Connection) {
	t.Helper()
	if d := dataDiff(got, want); len(d) > 0 {
		t.Errorf("%s: fields differ from what was written: %v", what, d)
	}
}

func expectSame(t *testing.T, what string, got, want store.Connection) {
	t.Helper()
	if d := fullDiff(got, want); len(d) > 0 {
		t.Errorf("%s: fields differ: %v", what, d)
	}
}

func mustCreate(t *testing.T, s store.Store, c store.Connection, events ...store.Event) store.Connection {
	t.Helper()
	got, err := s.CreateConnection(t.Context(), c, events...)
	if err != nil {
		t.Fatalf("CreateConnection(%q): %v", c.ID, err)
	}
	return got
}

func mustGet(t *testing.T, s store.Store, id string) store.Connection {
	t.Helper()
	got, err := s.GetConnection(t.Context(), id)
	if err != nil {
		t.Fatalf("GetConnection(%q): %v", id, err)
	}
	return got
}

// counter reads {"n": …} from Metadata; the concurrency tests count in it.
func counter(m json.RawMessage) (int, error) {
	var v struct {
		N int `json:"n"`
	}
	err := json.Unmarshal(m, &v)
	return v.N, err
}

func withCounter(n int) json.RawMessage {
	b, _ := json.Marshal(map[string]int{"n": n})
	return b
}
