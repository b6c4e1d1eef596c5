package lifecycle

import (
	"fmt"
	"time"

	"github.com/tokenbroker/tokenbroker/oauth"
)

// Defaults for the zero fields of [Policy].
const (
	// DefaultWindow is how long before expiry a token is refreshed when
	// its lifetime allows it.
	DefaultWindow = 5 * time.Minute
	// DefaultGiveUpAfter turns a run of transient failures this long into
	// needs_reauth: a connection that has not refreshed for days needs a
	// person, not another retry.
	DefaultGiveUpAfter = 72 * time.Hour
	// DefaultCooldownBase and DefaultCooldownMax bound the rest after
	// consecutive transient failures: 30s doubling up to 4h, so a connection
	// that fails for a day costs its provider about 14 calls however many
	// callers ask for it.
	DefaultCooldownBase = 30 * time.Second
	DefaultCooldownMax  = 4 * time.Hour
	// DefaultOnErrorInterval: at most one refresh per connection per 30
	// seconds because callers saw its token fail.
	DefaultOnErrorInterval = 30 * time.Second
)

// MinWindow is the floor of the effective window: a token is never handed
// out with less than this left, as long as its lifetime allows (the floor
// itself is capped at half the lifetime, so a 2-second token is refreshed
// after one second rather than on every read).
const MinWindow = 5 * time.Second

// Rotation is how a provider treats a refresh token once it is used
// (docs/provider-quirks.md, "Rotation").
type Rotation string

const (
	// RotationNone: the refresh token is reused until it dies (Google).
	RotationNone Rotation = "none"
	// RotationRotate: every refresh returns a new refresh token and
	// revokes the old one, often with the whole chain on reuse (Slack,
	// GitHub Apps, Hydra, Auth0). The safe assumption, and the default.
	RotationRotate Rotation = "rotate"
	// RotationRotateGrace: as RotationRotate, but the used token keeps
	// working for [Policy.RotationGrace] (Atlassian, Xero, Cognito, Dex).
	RotationRotateGrace Rotation = "rotate_grace"
	// RotationRotateKeepOld: a new refresh token comes back and the old one
	// keeps working (Microsoft Entra).
	RotationRotateKeepOld Rotation = "rotate_keep_old"
)

// Valid reports whether r is a known rotation, the empty default included.
func (r Rotation) Valid() bool {
	switch r {
	case "", RotationNone, RotationRotate, RotationRotateGrace, RotationRotateKeepOld:
		return true
	}
	return false
}

// Policy is how one provider's grants are kept alive. The zero value is
// usable: every zero field takes its default or means "unknown".
type Policy struct {
	// Window is how long before expiry a token is refreshed; zero means
	// DefaultWindow. It is capped at half the token's lifetime (see
	// [Policy.EffectiveWindow]).
	Window time.Duration
	// DefaultLifetime is the access token's lifetime when the provider
	// states none. Zero: the expiry stays unknown and the token is served
	// until an API rejects it.
	DefaultLifetime time.Duration
	// RefreshTokenLifetime is the refresh token's lifetime when the
	// provider documents one but does not send it. Zero: unknown.
	RefreshTokenLifetime time.Duration
	// RefreshIdleTimeout is how long the provider keeps an unused refresh
	// token alive (Xero 30 days, Google 6 months); the schedule uses the
	// token before then. Zero: no such limit.
	RefreshIdleTimeout time.Duration
	// Rotation and RotationGrace describe what the provider does with a
	// used refresh token; they decide whether a refresh whose outcome is
	// unknown may be sent again (see [Policy.Classify]).
	Rotation      Rotation
	RotationGrace time.Duration
	// BadRequestTransient makes an HTTP 400 answer to a refresh transient.
	// By default it is terminal: the same request can only fail the same
	// way, and some servers (Dex) answer a spent or expired refresh token
	// with 400 invalid_request rather than invalid_grant.
	BadRequestTransient bool
	// GiveUpAfter turns transient failures that have lasted this long into
	// needs_reauth; zero means DefaultGiveUpAfter.
	GiveUpAfter time.Duration
	// OnErrorInterval is the on-error refresh budget: a token younger than
	// this is not refreshed again because a caller saw it fail; the caller
	// gets the current token back, and passes the API's answer on. An API
	// that answers 401 for reasons other than the token would otherwise
	// cost one refresh per call. Zero means DefaultOnErrorInterval.
	OnErrorInterval time.Duration
	// Cooldown spaces out attempts after transient failures (Base and Max;
	// MaxAttempts is not used). Zero fields take DefaultCooldownBase and
	// DefaultCooldownMax.
	Cooldown oauth.Backoff
}

// Validate reports the first field of p that cannot work.
func (p Policy) Validate() error {
	switch {
	case p.Window < 0:
		return fmt.Errorf("lifecycle: refresh window %v is negative", p.Window)
	case p.DefaultLifetime < 0:
		return fmt.Errorf("lifecycle: default lifetime %v is negative", p.DefaultLifetime)
	case p.RefreshTokenLifetime < 0:
		return fmt.Errorf("lifecycle: refresh token lifetime %v is negative", p.RefreshTokenLifetime)
	case p.RefreshIdleTimeout < 0:
		return fmt.Errorf("lifecycle: refresh idle timeout %v is negative", p.RefreshIdleTimeout)
	case !p.Rotation.Valid():
		return fmt.Errorf("lifecycle: unknown rotation %q", p.Rotation)
	case p.RotationGrace < 0:
		return fmt.Errorf("lifecycle: rotation grace %v is negative", p.RotationGrace)
	case p.GiveUpAfter < 0:
		return fmt.Errorf("lifecycle: give-up time %v is negative", p.GiveUpAfter)
	case p.OnErrorInterval < 0:
		return fmt.Errorf("lifecycle: on-error interval %v is negative", p.OnErrorInterval)
	case p.Cooldown.Base < 0 || p.Cooldown.Max < 0:
		return fmt.Errorf("lifecycle: cooldown %v..%v is negative", p.Cooldown.Base, p.Cooldown.Max)
	}
	return nil
}

func (p Policy) window() time.Duration {
	if p.Window <= 0 {
		return DefaultWindow
	}
	return p.Window
}

func (p Policy) onErrorInterval() time.Duration {
	if p.OnErrorInterval <= 0 {
		return DefaultOnErrorInterval
	}
	return p.OnErrorInterval
}

func (p Policy) giveUpAfter() time.Duration {
	if p.GiveUpAfter <= 0 {
		return DefaultGiveUpAfter
	}
	return p.GiveUpAfter
}

func (p Policy) cooldown() oauth.Backoff {
	b := p.Cooldown
	if b.Base <= 0 {
		b.Base = DefaultCooldownBase
	}
	if b.Max <= 0 {
		b.Max = DefaultCooldownMax
	}
	return b
}

// Lifetime is how long a token issued at issued and expiring at expires
// lives. When the issue time is unknown the provider's default lifetime
// stands in; zero when neither is known.
func (p Policy) Lifetime(issued, expires time.Time) time.Duration {
	switch {
	case expires.IsZero() || issued.IsZero():
		return p.DefaultLifetime
	case !expires.After(issued):
		return 0 // expired when it arrived
	}
	return expires.Sub(issued)
}

// EffectiveWindow is the effective refresh window of a token issued at issued and
// expiring at expires: the configured window, capped at half the token's
// lifetime, and at least MinWindow (itself capped at half the lifetime).
//
// The cap is what keeps a token that lives less than the configured window
// (a 60-second token against a 5-minute window) from being due the moment
// it is issued, and so refreshed on every read. Half leaves the other half
// of the token's life for a refresh that fails to be retried while the
// current token still works. An unknown lifetime leaves the configured
// window as it is.
func (p Policy) EffectiveWindow(issued, expires time.Time) time.Duration {
	w := p.window()
	life := p.Lifetime(issued, expires)
	if life <= 0 {
		return w
	}
	half := life / 2
	w = min(w, half)
	return max(w, min(MinWindow, half))
}

// DueAt is when a token issued at issued and expiring at expires becomes
// due for a refresh: expires minus [Policy.EffectiveWindow]. Zero when the expiry is
// unknown: such a token is due only when an API rejects it.
func (p Policy) DueAt(issued, expires time.Time) time.Time {
	if expires.IsZero() {
		return time.Time{}
	}
	return expires.Add(-p.EffectiveWindow(issued, expires))
}

// Fresh reports whether a token issued at issued and expiring at expires
// may be handed out at now without a refresh.
func (p Policy) Fresh(issued, expires, now time.Time) bool {
	due := p.DueAt(issued, expires)
	return due.IsZero() || now.Before(due)
}

// Unexpired reports whether a token expiring at expires still works at
// now: what stale-while-revalidate may serve while a refresh fails.
func Unexpired(expires, now time.Time) bool {
	return expires.IsZero() || now.Before(expires)
}
