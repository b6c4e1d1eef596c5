package lifecycle

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/tokenbroker/tokenbroker/oauth"
)

// Classify says what a failed renewal means for the grant under p, as an
// error of the right kind: errors.Is(err, oauth.ErrReauthRequired) when a
// person must reconnect, oauth.ErrTransient when trying later may work.
//
// It starts from the token endpoint's own classification and adds the
// provider policy: an HTTP 400 answer to a refresh is terminal (the same
// request can only fail the same way; Dex answers a spent refresh token with
// 400 invalid_request) unless the policy says the provider's 400s are
// transient. Errors that are not an *oauth.Error are transient.
//
// A refresh whose outcome is unknown (oauth.Error.OutcomeUnknown: the
// request may have reached the provider, no answer came back) depends on
// the provider's rotation. Where a used refresh token stays valid (none,
// rotate_keep_old) or stays valid for a while (rotate_grace, within the
// grace), sending it again is safe: the failure is transient. Where it is
// revoked at once (rotate, the default), sending it again may be the double
// spend that revokes the grant: the failure is terminal, with the distinct
// code oauth.CodeOutcomeUnknown, and only a person's forced refresh sends
// the token again (PersonMayRetry).
func (p Policy) Classify(err error) error {
	var oe *oauth.Error
	if !errors.As(err, &oe) {
		return err
	}
	if oe.OutcomeUnknown && oe.Op == "refresh" && (p.Rotation == "" || p.Rotation == RotationRotate) {
		return &oauth.Error{Op: oe.Op, StatusCode: oe.StatusCode, Code: oauth.CodeOutcomeUnknown, Kind: oauth.KindTerminal,
			OutcomeUnknown: true, Err: err,
			Description: "the refresh may have reached the provider, which revokes a refresh token once used, but no answer came back; " +
				"refresh the connection by hand if the provider still accepts its refresh token, else reconnect it"}
	}
	if oe.Kind == oauth.KindTransient && oe.StatusCode == http.StatusBadRequest && !p.BadRequestTransient &&
		oe.Code != "slow_down" && oe.Code != "temporarily_unavailable" {
		t := *oe
		t.Kind = oauth.KindTerminal
		return &t
	}
	return err
}

// Verdict is what a failure did to a grant.
type Verdict int

const (
	// CoolingDown: the failure is transient; the grant rests until
	// Failure.NextAttemptAt and is then tried again.
	CoolingDown Verdict = iota
	// NeedsReauth: the grant is dead (a terminal error, or transient
	// failures that lasted longer than GiveUpAfter); the provider is not
	// called for it again until a person reconnects.
	NeedsReauth
)

// Fail lands a failed renewal of g at now: the failure recorded, the
// status and next attempt decided. rnd, drawn from [0, 1), jitters the
// cooldown. The returned error is err as [Policy.Classify] sees it, for the
// caller to return; Verdict says what became of the grant.
func Fail(g Grant, cause error, p Policy, now time.Time, rnd float64) (Grant, Verdict, error) {
	cause = p.Classify(cause)
	code, message, retryAfter := "refresh_failed", "", time.Duration(0)
	var oe *oauth.Error
	if errors.As(cause, &oe) {
		code, message, retryAfter = oe.Code, oe.Description, oe.RetryAfter
		if code == "" && oe.StatusCode != 0 {
			code = fmt.Sprintf("http_%d", oe.StatusCode)
		}
	}
	if code == "" {
		code = "refresh_failed"
	}
	f := Failure{Code: code, Message: message, Attempts: 1, FirstAt: now}
	if g.Failure != nil {
		f.Attempts = g.Failure.Attempts + 1
		f.FirstAt = g.Failure.FirstAt
	}
	verdict := CoolingDown
	if oauth.Terminal(cause) {
		verdict = NeedsReauth
	} else if now.Sub(f.FirstAt) >= p.giveUpAfter() {
		verdict = NeedsReauth
		f.Message = fmt.Sprintf("refresh has failed since %s (%d attempts); last: %s",
			f.FirstAt.UTC().Format(time.RFC3339), f.Attempts, message)
	}
	if verdict == CoolingDown && oe != nil && oe.OutcomeUnknown && p.Rotation == RotationRotateGrace {
		// The refresh token the lost request carried stays valid for the
		// grace only: try again inside it, or not at all.
		if !p.MaySendAgain(f.FirstAt, now) {
			verdict = NeedsReauth
			f.Code = oauth.CodeOutcomeUnknown
			f.Message = "the refresh may have reached the provider but no answer came back, and its rotation grace has passed; refresh the connection by hand if the provider still accepts its refresh token, else reconnect it"
			cause = &oauth.Error{Op: oe.Op, Code: oauth.CodeOutcomeUnknown, Kind: oauth.KindTerminal, OutcomeUnknown: true, Err: cause, Description: f.Message}
		}
	}
	if verdict == NeedsReauth {
		g.Status = StatusNeedsReauth
	} else {
		wait := p.CooldownAfter(f.Attempts, retryAfter, rnd)
		if oe != nil && oe.OutcomeUnknown && p.Rotation == RotationRotateGrace {
			wait = min(wait, p.RotationGrace/4)
		}
		f.NextAttemptAt = now.Add(wait)
	}
	g.Failure = &f
	g.NextRefreshAt = p.NextRefresh(&g, rnd)
	return g, verdict, cause
}

// CooldownAfter is how long a grant rests after its n-th consecutive
// transient failure: drawn from [d/2, d) with d = min(Max, Base·2^(n-1))
// of the policy's Cooldown, or the provider's Retry-After if that is
// longer (capped at Max). rnd is drawn from [0, 1).
//
// Equal jitter rather than full jitter: the spread is still there, but the
// wait never collapses to nothing, which is what bounds the calls a dead
// connection costs its provider. It is the one cooldown in tokenbroker:
// the library, the broker and webhook deliveries all use it.
func (p Policy) CooldownAfter(n int, retryAfter time.Duration, rnd float64) time.Duration {
	b := p.cooldown()
	d := b.Delay(n-1, 0.5+clamp01(rnd)/2)
	if retryAfter > d {
		d = min(retryAfter, b.Max)
	}
	return d
}

// ErrorOf turns g's recorded state into the error a caller gets without
// the provider being called: terminal for a grant that needs a person,
// transient with the time left as RetryAfter during a cooldown, nil
// otherwise.
func ErrorOf(g *Grant, now time.Time) error {
	switch g.Status {
	case StatusNeedsReauth, StatusRevoked:
		code, desc := string(g.Status), ""
		if g.Failure != nil {
			if g.Failure.Code != "" {
				code = g.Failure.Code
			}
			desc = g.Failure.Message
		}
		return &oauth.Error{Op: "refresh", Code: code, Description: desc, Kind: oauth.KindTerminal}
	}
	if f := g.Failure; f != nil && now.Before(f.NextAttemptAt) {
		return &oauth.Error{Op: "refresh", Code: f.Code, Description: f.Message, Kind: oauth.KindTransient,
			RetryAfter: f.NextAttemptAt.Sub(now)}
	}
	return nil
}

// NoRefreshError is the terminal error for a grant that must be renewed
// but has no usable refresh token.
func NoRefreshError(g *Grant) *oauth.Error {
	if !g.HasRefreshToken {
		return &oauth.Error{Op: "refresh", Code: oauth.CodeNoRefreshToken, Kind: oauth.KindTerminal,
			Description: "the access token is expired or was rejected and there is no refresh token; reconnect to obtain a new grant"}
	}
	return &oauth.Error{Op: "refresh", Code: oauth.CodeRefreshExpired, Kind: oauth.KindTerminal,
		Description: "the refresh token has expired; reconnect to obtain a new grant"}
}

// MaySendAgain reports whether a refresh token sent at sentAt, whose
// answer never arrived, may be sent again at now: always where a used
// refresh token stays valid (none, rotate_keep_old), within the grace where
// it stays valid for a while (rotate_grace), never where it is revoked at
// once (rotate, the default).
func (p Policy) MaySendAgain(sentAt, now time.Time) bool {
	switch p.Rotation {
	case RotationNone, RotationRotateKeepOld:
		return true
	case RotationRotateGrace:
		return p.RotationGrace > 0 && now.Before(sentAt.Add(p.RotationGrace))
	}
	return false
}

// MarksRefreshes reports whether refreshes at this provider must be marked
// as started before the refresh token is sent (store.Connection's
// RefreshStartedAt): where a used token is revoked, at once or after a
// grace, the next one to refresh must know that an earlier attempt may have
// spent it.
func (p Policy) MarksRefreshes() bool {
	return p.Rotation != RotationNone && p.Rotation != RotationRotateKeepOld
}

// PersonMayRetry reports whether g failed in a way that a person may clear
// by asking for a refresh now (rather than by reconnecting): its last
// refresh's outcome is unknown, and only a person can say that sending the
// same refresh token again is safe.
func PersonMayRetry(g *Grant) bool {
	return g.Failure != nil && g.Failure.Code == oauth.CodeOutcomeUnknown
}
