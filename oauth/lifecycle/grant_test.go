package lifecycle

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/oauth"
)

func active(issued time.Time, life time.Duration) Grant {
	return Grant{Status: StatusActive, HasAccessToken: true, HasRefreshToken: true, TokenType: "Bearer",
		Scope: "read", IssuedAt: issued, ExpiresAt: issued.Add(life)}
}

// TestApplyQuirks lands the token responses of docs/provider-quirks.md in a grant.
func TestApplyQuirks(t *testing.T) {
	now := t0.Add(time.Hour)
	hard := t0.Add(100 * 24 * time.Hour)
	old := active(t0, time.Hour)
	old.RefreshExpiresAt = t0.Add(30 * 24 * time.Hour)
	old.RefreshHardExpiresAt = hard
	old.Failure = &Failure{Code: "http_503", Attempts: 2}
	tests := []struct {
		name   string
		origin Origin
		g      Grant
		p      Policy
		ans    oauth.Token
		src    RefreshSource
		check  func(t *testing.T, g Grant)
	}{
		{
			name: "no refresh token in the answer keeps the old one and its expiries",
			g:    old, ans: oauth.Token{AccessToken: "a", Expiry: now.Add(time.Hour)}, src: RefreshKept,
			check: func(t *testing.T, g Grant) {
				if !g.HasRefreshToken || !g.RefreshExpiresAt.Equal(old.RefreshExpiresAt) || !g.RefreshHardExpiresAt.Equal(hard) {
					t.Errorf("refresh token facts lost: %+v", g)
				}
			},
		},
		{
			name: "rotated refresh token takes the answer's expiry, the chain keeps its hard limit",
			g:    old, ans: oauth.Token{AccessToken: "a", RefreshToken: "r2", RefreshExpiry: now.Add(24 * time.Hour)},
			src: RefreshFromAnswer,
			check: func(t *testing.T, g Grant) {
				if !g.RefreshExpiresAt.Equal(now.Add(24*time.Hour)) || !g.RefreshHardExpiresAt.Equal(hard) {
					t.Errorf("refresh expiries %v / %v", g.RefreshExpiresAt, g.RefreshHardExpiresAt)
				}
			},
		},
		{
			name: "rotated refresh token without an expiry gets the documented lifetime",
			g:    old, p: Policy{RefreshTokenLifetime: 6 * 30 * 24 * time.Hour},
			ans: oauth.Token{AccessToken: "a", RefreshToken: "r2"}, src: RefreshFromAnswer,
			check: func(t *testing.T, g Grant) {
				if !g.RefreshExpiresAt.Equal(now.Add(6 * 30 * 24 * time.Hour)) {
					t.Errorf("refresh expiry %v", g.RefreshExpiresAt)
				}
			},
		},
		{
			name: "no expires_in: the provider's default lifetime, marked defaulted",
			g:    old, p: Policy{DefaultLifetime: 2 * time.Hour}, ans: oauth.Token{AccessToken: "a"}, src: RefreshKept,
			check: func(t *testing.T, g Grant) {
				if !g.ExpiresAt.Equal(now.Add(2*time.Hour)) || !g.ExpiryDefaulted {
					t.Errorf("expiry %v defaulted %v", g.ExpiresAt, g.ExpiryDefaulted)
				}
			},
		},
		{
			name: "no expires_in and no default: unknown, never due, never immortal by accident",
			g:    old, ans: oauth.Token{AccessToken: "a"}, src: RefreshKept,
			check: func(t *testing.T, g Grant) {
				if !g.ExpiresAt.IsZero() || g.ExpiryDefaulted || !g.NextRefreshAt.IsZero() {
					t.Errorf("expiry %v defaulted %v next %v", g.ExpiresAt, g.ExpiryDefaulted, g.NextRefreshAt)
				}
			},
		},
		{
			name: "lower-case bearer is spelled as APIs expect; a refresh without scope keeps the grant's",
			g:    old, ans: oauth.Token{AccessToken: "a", TokenType: "bearer", Expiry: now.Add(time.Hour)}, src: RefreshKept,
			check: func(t *testing.T, g Grant) {
				if g.TokenType != "Bearer" || g.Scope != "read" {
					t.Errorf("type %q scope %q", g.TokenType, g.Scope)
				}
			},
		},
		{
			name: "a refresh heals the grant and reschedules it",
			g:    old, ans: oauth.Token{AccessToken: "a", Expiry: now.Add(time.Hour)}, src: RefreshKept,
			check: func(t *testing.T, g Grant) {
				if g.Failure != nil || g.Status != StatusActive || !g.LastRefreshAt.Equal(now) {
					t.Errorf("after a refresh: %+v", g)
				}
				if due := now.Add(55 * time.Minute); !g.NextRefreshAt.Equal(due) {
					t.Errorf("next refresh %v, want %v (jitter 0)", g.NextRefreshAt, due)
				}
			},
		},
		{
			name:   "a new grant for a dead connection without a refresh token holds none",
			origin: Granted, g: func() Grant { g := old; g.Status = StatusNeedsReauth; return g }(),
			ans: oauth.Token{AccessToken: "a", Expiry: now.Add(time.Hour)}, src: RefreshNone,
			check: func(t *testing.T, g Grant) {
				if g.HasRefreshToken || !g.RefreshExpiresAt.IsZero() || g.Status != StatusActive || !g.LastRefreshAt.IsZero() {
					t.Errorf("after reconnecting: %+v", g)
				}
			},
		},
		{
			name:   "a new grant without a refresh token replaces the old one with none",
			origin: Granted, g: old, ans: oauth.Token{AccessToken: "a", Expiry: now.Add(time.Hour)}, src: RefreshNone,
			check: func(t *testing.T, g Grant) {
				if g.HasRefreshToken || !g.RefreshExpiresAt.IsZero() || !g.RefreshHardExpiresAt.IsZero() {
					t.Errorf("a re-import kept the previous grant's refresh token: %+v", g)
				}
			},
		},
		{
			name:   "a new grant starts a new chain and sets the scope it was granted",
			origin: Granted, g: old, ans: oauth.Token{AccessToken: "a", RefreshToken: "r", Scope: ""}, src: RefreshFromAnswer,
			check: func(t *testing.T, g Grant) {
				if !g.RefreshHardExpiresAt.IsZero() || g.Scope != "" {
					t.Errorf("hard expiry %v scope %q carried into a new grant", g.RefreshHardExpiresAt, g.Scope)
				}
			},
		},
		{
			name:   "introspection changes the expiry and the schedule, nothing else",
			origin: Introspected,
			g: func() Grant {
				g := old
				g.ExpiresAt, g.ExpiryDefaulted = t0.Add(2*time.Hour), true
				g.NextRefreshAt = t0.Add(115 * time.Minute)
				return g
			}(),
			ans: oauth.Token{Expiry: t0.Add(10 * time.Minute)}, src: RefreshKept,
			check: func(t *testing.T, g Grant) {
				if !g.ExpiresAt.Equal(t0.Add(10*time.Minute)) || g.ExpiryDefaulted {
					t.Errorf("expiry %v defaulted %v", g.ExpiresAt, g.ExpiryDefaulted)
				}
				if want := t0.Add(5 * time.Minute); !g.NextRefreshAt.Equal(want) {
					t.Errorf("next refresh %v, want %v: it must follow the learnt expiry", g.NextRefreshAt, want)
				}
				if g.Failure == nil || !g.IssuedAt.Equal(t0) {
					t.Errorf("introspection touched more than the expiry: %+v", g)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ans := tc.ans
			got, src, err := Apply(tc.g, tc.origin, &ans, tc.p, now, 0)
			if err != nil {
				t.Fatal(err)
			}
			if src != tc.src {
				t.Errorf("refresh source %v, want %v", src, tc.src)
			}
			if tc.origin != Introspected && (!got.HasAccessToken || !got.IssuedAt.Equal(now)) {
				t.Errorf("access token facts %+v", got)
			}
			tc.check(t, got)
		})
	}
}

func TestApplyRefusesGarbage(t *testing.T) {
	g := active(t0, time.Hour)
	for _, ans := range []*oauth.Token{nil, {}, {RefreshToken: "r", Expiry: t0.Add(time.Hour)}} {
		got, _, err := Apply(g, Refreshed, ans, Policy{}, t0, 0)
		if !errors.Is(err, ErrNoAccessToken) || got != g {
			t.Errorf("Apply(%v) = %v; the grant must stay as it was", ans, err)
		}
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name     string
		p        Policy
		err      error
		terminal bool
	}{
		{"invalid_grant", Policy{}, &oauth.Error{StatusCode: 400, Code: "invalid_grant", Kind: oauth.KindTerminal}, true},
		{"400 invalid_request (Dex, spent token)", Policy{}, &oauth.Error{StatusCode: 400, Code: "invalid_request"}, true},
		{"400 when the profile says 400s are transient", Policy{BadRequestTransient: true}, &oauth.Error{StatusCode: 400, Code: "invalid_request"}, false},
		{"400 slow_down", Policy{}, &oauth.Error{StatusCode: 400, Code: "slow_down"}, false},
		{"503", Policy{}, &oauth.Error{StatusCode: 503, Code: "http_503"}, false},
		{"429", Policy{}, &oauth.Error{StatusCode: 429, Code: "http_429"}, false},
		{"network", Policy{}, &oauth.Error{Code: oauth.CodeNetwork}, false},
		{"not an oauth error", Policy{}, errors.New("boom"), false},
	}
	for _, tc := range tests {
		got := tc.p.Classify(tc.err)
		if oauth.Terminal(got) != tc.terminal {
			t.Errorf("%s: terminal = %v, want %v", tc.name, oauth.Terminal(got), tc.terminal)
		}
	}
	// Classify never changes the error it was given.
	in := &oauth.Error{StatusCode: http.StatusBadRequest, Code: "invalid_request"}
	Policy{}.Classify(in)
	if in.Kind != oauth.KindTransient {
		t.Error("Classify modified its argument")
	}
}

func TestFail(t *testing.T) {
	p := Policy{Cooldown: oauth.Backoff{Base: time.Minute, Max: time.Hour}, GiveUpAfter: 24 * time.Hour}
	g := active(t0, time.Hour)
	transient := &oauth.Error{StatusCode: 503, Code: "http_503", Description: "later"}

	g1, v, err := Fail(g, transient, p, t0, 0.5)
	if v != CoolingDown || oauth.Terminal(err) || g1.Status != StatusActive {
		t.Fatalf("first transient failure: verdict %v status %v", v, g1.Status)
	}
	f := g1.Failure
	if f.Attempts != 1 || !f.FirstAt.Equal(t0) || f.Code != "http_503" || f.Message != "later" {
		t.Errorf("failure %+v", f)
	}
	if wait := f.NextAttemptAt.Sub(t0); wait < 30*time.Second || wait > time.Minute {
		t.Errorf("first cooldown %v, want within [30s, 1m]", wait)
	}
	if g1.NextRefreshAt.Before(f.NextAttemptAt) {
		t.Errorf("next refresh %v inside the cooldown ending %v", g1.NextRefreshAt, f.NextAttemptAt)
	}

	g2, _, _ := Fail(g1, &oauth.Error{StatusCode: 429, Code: "http_429", RetryAfter: 20 * time.Minute}, p, t0.Add(time.Minute), 0)
	if g2.Failure.Attempts != 2 || !g2.Failure.FirstAt.Equal(t0) {
		t.Errorf("second failure %+v", g2.Failure)
	}
	if wait := g2.Failure.NextAttemptAt.Sub(t0.Add(time.Minute)); wait != 20*time.Minute {
		t.Errorf("Retry-After 20m gave a cooldown of %v", wait)
	}

	g3, v, err := Fail(g2, transient, p, t0.Add(25*time.Hour), 0)
	if v != NeedsReauth || g3.Status != StatusNeedsReauth || !g3.NextRefreshAt.IsZero() {
		t.Errorf("failing for longer than GiveUpAfter: verdict %v status %v next %v", v, g3.Status, g3.NextRefreshAt)
	}
	if oauth.Terminal(err) {
		t.Error("giving up reclassified the provider's error as terminal")
	}

	g4, v, err := Fail(g, &oauth.Error{StatusCode: 400, Code: "invalid_request"}, p, t0, 0)
	if v != NeedsReauth || !oauth.Terminal(err) || g4.Status != StatusNeedsReauth {
		t.Errorf("400 on refresh: verdict %v terminal %v", v, oauth.Terminal(err))
	}
	if e := ErrorOf(&g4, t0); !oauth.Terminal(e) {
		t.Errorf("ErrorOf a dead grant = %v", e)
	}
	if e := ErrorOf(&g1, t0); oauth.Terminal(e) || oauth.RetryAfter(e) <= 0 {
		t.Errorf("ErrorOf a cooling grant = %v", e)
	}
	if e := ErrorOf(&g1, f.NextAttemptAt); e != nil {
		t.Errorf("ErrorOf after the cooldown = %v", e)
	}
}

func TestCooldownAfter(t *testing.T) {
	p := Policy{Cooldown: oauth.Backoff{Base: 30 * time.Second, Max: 4 * time.Hour}}
	for n := 1; n <= 40; n++ {
		ceil := min(4*time.Hour, 30*time.Second<<min(n-1, 20))
		lo, hi := p.CooldownAfter(n, 0, 0), p.CooldownAfter(n, 0, 0.999999)
		if lo != ceil/2 || hi > ceil || hi < ceil*9/10 {
			t.Errorf("n=%d: cooldown in [%v, %v], want [%v, %v)", n, lo, hi, ceil/2, ceil)
		}
	}
	// A day of failures costs about 14 calls: the sum of the shortest waits.
	var sum time.Duration
	calls := 0
	for sum < 24*time.Hour {
		calls++
		sum += p.CooldownAfter(calls, 0, 0)
	}
	if calls > 20 {
		t.Errorf("%d calls in a day of failures", calls)
	}
	if got := p.CooldownAfter(1, 10*time.Hour, 0); got != 4*time.Hour {
		t.Errorf("Retry-After beyond Max gave %v, want Max", got)
	}
}

func TestServes(t *testing.T) {
	p := Policy{Window: 5 * time.Minute, RefreshIdleTimeout: 30 * 24 * time.Hour}
	g := active(t0, 60*time.Second) // due after 30s
	g.NextRefreshAt = p.NextRefresh(&g, 0)
	tests := []struct {
		reason  Reason
		current bool
		at      time.Duration
		want    bool
	}{
		{OnDemand, false, 0, true},
		{OnDemand, false, 29 * time.Second, true},
		{OnDemand, false, 30 * time.Second, false},
		{Scheduled, false, 10 * time.Second, true},
		{Scheduled, false, 30 * time.Second, false},
		{Rejected, true, 0, false},
		{Rejected, false, 0, true},
		{Forced, false, 0, false},
	}
	for _, tc := range tests {
		if got := p.Serves(&g, tc.reason, tc.current, t0.Add(tc.at)); got != tc.want {
			t.Errorf("%v at +%v (rejected current %v) = %v, want %v", tc.reason, tc.at, tc.current, got, tc.want)
		}
	}
	dead := g
	dead.Status = StatusNeedsReauth
	if p.Serves(&dead, OnDemand, false, t0) {
		t.Error("a dead grant serves")
	}
	// Keep-alive: a long-lived token whose refresh token would die unused.
	idle := active(t0, 90*24*time.Hour)
	if !p.KeepAliveDue(&idle, t0.Add(28*24*time.Hour)) || p.KeepAliveDue(&idle, t0.Add(26*24*time.Hour)) {
		t.Error("keep-alive not due at 9/10 of the idle timeout")
	}
	if next := p.NextRefresh(&idle, 0); !next.Equal(t0.Add(27 * 24 * time.Hour)) {
		t.Errorf("next refresh of an idle grant %v, want 27 days after issue", next)
	}
	if p.Serves(&idle, Scheduled, false, t0.Add(28*24*time.Hour)) {
		t.Error("the schedule declined a keep-alive refresh")
	}
	if !ServesWhileFailing(&g, OnDemand, t0.Add(59*time.Second)) || ServesWhileFailing(&g, OnDemand, t0.Add(60*time.Second)) {
		t.Error("stale-while-revalidate must serve until expiry, not after")
	}
	if ServesWhileFailing(&g, Rejected, t0) {
		t.Error("a rejected token was served while failing")
	}
}

func TestNextRefreshJitter(t *testing.T) {
	p := Policy{}
	g := active(t0, time.Hour)
	due := p.DueAt(g.IssuedAt, g.ExpiresAt)
	for _, j := range []float64{0, 0.25, 0.5, 0.999, 1, -1} {
		next := p.NextRefresh(&g, j)
		if next.After(due) || next.Before(due.Add(-DefaultWindow/4)) {
			t.Errorf("jitter %v: next refresh %v outside [due-w/4, due]", j, next.Sub(t0))
		}
	}
	g.Status = StatusNeedsReauth
	if !p.NextRefresh(&g, 0).IsZero() {
		t.Error("a dead grant was scheduled")
	}
}

func TestRefreshTokenEnds(t *testing.T) {
	g := active(t0, time.Hour)
	g.RefreshExpiresAt = t0.Add(10 * 24 * time.Hour)
	if !CanRefresh(&g, t0) || CanRefresh(&g, g.RefreshExpiresAt) {
		t.Error("CanRefresh around the refresh token's expiry")
	}
	if !RefreshEndsWithin(&g, t0, 14*24*time.Hour) || RefreshEndsWithin(&g, t0, 24*time.Hour) {
		t.Error("RefreshEndsWithin")
	}
	g.HasRefreshToken = false
	if CanRefresh(&g, t0) {
		t.Error("CanRefresh without a refresh token")
	}
	if e := NoRefreshError(&g); e.Code != oauth.CodeNoRefreshToken || !oauth.Terminal(e) {
		t.Errorf("NoRefreshError = %v", e)
	}
}

// TestOnErrorBudget: a caller's report of a failing token causes at most
// one refresh per OnErrorInterval; within it the current token answers.
func TestOnErrorBudget(t *testing.T) {
	p := Policy{OnErrorInterval: 30 * time.Second}
	g := active(t0, time.Hour)
	if p.Serves(&g, Rejected, true, t0.Add(time.Second)) {
		t.Fatal("the first rejection did not cause a refresh")
	}
	ans := oauth.Token{AccessToken: "a2", Expiry: t0.Add(2 * time.Hour)}
	g2, _, err := Apply(g, RefreshedOnError, &ans, p, t0.Add(time.Second), 0)
	if err != nil || !g2.OnErrorRefreshAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("Apply(RefreshedOnError): %v, on-error refresh at %v", err, g2.OnErrorRefreshAt)
	}
	if !p.Serves(&g2, Rejected, true, t0.Add(30*time.Second)) {
		t.Error("a second rejection within the interval caused another refresh")
	}
	if p.Serves(&g2, Rejected, true, t0.Add(31*time.Second)) {
		t.Error("a rejection after the interval did not cause a refresh")
	}
	g3, _, _ := Apply(g2, Refreshed, &ans, p, t0.Add(2*time.Second), 0)
	if !g3.OnErrorRefreshAt.Equal(g2.OnErrorRefreshAt) {
		t.Error("a scheduled refresh moved the on-error budget")
	}
}

// TestOutcomeUnknown: whether a refresh that may have reached the provider
// is sent again depends on what the provider does with a used token.
func TestOutcomeUnknown(t *testing.T) {
	lost := &oauth.Error{Op: "refresh", Code: oauth.CodeNetwork, OutcomeUnknown: true}
	g := active(t0, time.Hour)
	for _, tc := range []struct {
		rotation Rotation
		grace    time.Duration
		terminal bool
	}{
		{"", 0, true},
		{RotationRotate, 0, true},
		{RotationRotateGrace, 10 * time.Minute, false},
		{RotationRotateGrace, 0, true},
		{RotationRotateKeepOld, 0, false},
		{RotationNone, 0, false},
	} {
		p := Policy{Rotation: tc.rotation, RotationGrace: tc.grace}
		got, v, err := Fail(g, lost, p, t0, 0.5)
		if oauth.Terminal(err) != tc.terminal || (v == NeedsReauth) != tc.terminal {
			t.Errorf("%q grace %v: terminal %v verdict %v, want terminal %v", tc.rotation, tc.grace, oauth.Terminal(err), v, tc.terminal)
			continue
		}
		if tc.terminal {
			if got.Failure.Code != oauth.CodeOutcomeUnknown || !PersonMayRetry(&got) {
				t.Errorf("%q: failure code %q, want %q, retryable by a person", tc.rotation, got.Failure.Code, oauth.CodeOutcomeUnknown)
			}
			continue
		}
		if tc.rotation == RotationRotateGrace && got.Failure.NextAttemptAt.After(t0.Add(tc.grace/4)) {
			t.Errorf("rotate_grace: next attempt %v after the failure, want inside the grace", got.Failure.NextAttemptAt.Sub(t0))
		}
	}
	// rotate_grace, failing past the grace: nobody may send the token again.
	p := Policy{Rotation: RotationRotateGrace, RotationGrace: time.Minute}
	g1, _, _ := Fail(g, lost, p, t0, 0)
	g2, v, err := Fail(g1, lost, p, t0.Add(2*time.Minute), 0)
	if v != NeedsReauth || !oauth.Terminal(err) || g2.Failure.Code != oauth.CodeOutcomeUnknown {
		t.Errorf("past the grace: verdict %v code %q", v, g2.Failure.Code)
	}
	// A lost client-credentials request is always safe to repeat.
	cc := &oauth.Error{Op: "client_credentials", Code: oauth.CodeNetwork, OutcomeUnknown: true}
	if _, v, _ := Fail(g, cc, Policy{}, t0, 0); v != CoolingDown {
		t.Error("a lost client-credentials request made the grant need a person")
	}
}
