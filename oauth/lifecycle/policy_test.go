package lifecycle

import (
	"fmt"
	"testing"
	"time"
)

var t0 = time.Date(2030, time.January, 2, 3, 4, 5, 0, time.UTC)

var (
	lifetimes = []time.Duration{
		time.Second, 2 * time.Second, 10 * time.Second, 60 * time.Second, 5 * time.Minute, 10 * time.Minute,
		time.Hour, 8 * time.Hour, 24 * time.Hour, 30 * 24 * time.Hour, 90 * 24 * time.Hour,
	}
	windows = []time.Duration{
		0, time.Second, 5 * time.Second, 30 * time.Second, time.Minute, 5 * time.Minute, 10 * time.Minute, time.Hour,
	}
)

// TestEffectiveWindowBounds walks every lifetime against every configured
// window: the effective window never exceeds half the lifetime nor the
// configured window (above the floor), and never drops below the floor.
func TestEffectiveWindowBounds(t *testing.T) {
	for _, life := range lifetimes {
		for _, win := range windows {
			p := Policy{Window: win}
			configured := win
			if configured == 0 {
				configured = DefaultWindow
			}
			w := p.EffectiveWindow(t0, t0.Add(life))
			floor := min(MinWindow, life/2)
			if w > life/2 {
				t.Errorf("life %v window %v: effective %v exceeds half the lifetime", life, win, w)
			}
			if w < floor {
				t.Errorf("life %v window %v: effective %v is below the floor %v", life, win, w, floor)
			}
			if w > max(configured, floor) {
				t.Errorf("life %v window %v: effective %v exceeds the configured window", life, win, w)
			}
			if want := max(min(configured, life/2), floor); w != want {
				t.Errorf("life %v window %v: effective %v, want %v", life, win, w, want)
			}
		}
	}
}

// TestOneRefreshPerToken simulates readers asking for a token every
// lifetime/200 for three lifetimes, refreshing whenever it is not fresh: a
// fresh token is never refreshed, each token is refreshed exactly once, and
// the count is what the effective window implies, never one per read.
func TestOneRefreshPerToken(t *testing.T) {
	for _, life := range lifetimes {
		for _, win := range windows {
			t.Run(fmt.Sprintf("%v/%v", life, win), func(t *testing.T) {
				p := Policy{Window: win}
				issued := t0
				expires := issued.Add(life)
				if !p.Fresh(issued, expires, issued) {
					t.Fatalf("a token is not fresh when issued")
				}
				// Readers come every lifetime/200, or often enough to see every
				// window open when that takes no more than 100,000 reads.
				eff := p.EffectiveWindow(t0, t0.Add(life))
				step := life / 200
				dense := eff/2 < step && 3*life/(eff/2) <= 100_000
				if dense {
					step = eff / 2
				}
				refreshes, reads := 0, 0
				for now := t0; now.Before(t0.Add(3 * life)); now = now.Add(step) {
					reads++
					if p.Fresh(issued, expires, now) {
						continue
					}
					if now.Before(p.DueAt(issued, expires)) {
						t.Fatalf("refreshed at %v before the token was due", now.Sub(issued))
					}
					if (dense || step < eff) && !now.Before(expires) {
						t.Fatalf("the token expired (%v after issue) before a reader saw it due", now.Sub(issued))
					}
					refreshes++
					issued, expires = now, now.Add(life)
				}
				interval := life - eff
				most := int(3*life/interval) + 1
				if refreshes > most || refreshes < 2 {
					t.Fatalf("%d refreshes over %d reads in three lifetimes, want 2..%d (one per token)", refreshes, reads, most)
				}
			})
		}
	}
}

func TestUnknownLifetime(t *testing.T) {
	// No expiry: served until an API rejects it.
	p := Policy{}
	if !p.Fresh(t0, time.Time{}, t0.Add(1000*time.Hour)) || !p.DueAt(t0, time.Time{}).IsZero() {
		t.Error("a token of unknown expiry became due")
	}
	// Expiry known, issue time not: the provider's default lifetime caps the
	// window, else the configured window applies as is.
	exp := t0.Add(time.Hour)
	if got := (Policy{DefaultLifetime: 2 * time.Minute}).EffectiveWindow(time.Time{}, exp); got != time.Minute {
		t.Errorf("window with default lifetime 2m = %v, want 1m", got)
	}
	if got := (Policy{}).EffectiveWindow(time.Time{}, exp); got != DefaultWindow {
		t.Errorf("window with nothing known = %v, want %v", got, DefaultWindow)
	}
	// Expired on arrival: due at once.
	if p.Fresh(t0, t0.Add(-time.Second), t0) {
		t.Error("a token that arrived expired is fresh")
	}
}

func TestPolicyValidate(t *testing.T) {
	for _, bad := range []Policy{
		{Window: -1}, {DefaultLifetime: -1}, {RefreshTokenLifetime: -1}, {RefreshIdleTimeout: -1},
		{Rotation: "sometimes"}, {RotationGrace: -1}, {GiveUpAfter: -1},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v validated", bad)
		}
	}
	for _, r := range []Rotation{"", RotationNone, RotationRotate, RotationRotateGrace, RotationRotateKeepOld} {
		if err := (Policy{Rotation: r}).Validate(); err != nil {
			t.Errorf("rotation %q: %v", r, err)
		}
	}
}
