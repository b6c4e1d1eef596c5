package oauth

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Kind classifies a failure by what the caller should do about it.
type Kind int

const (
	// KindTransient failures (network errors, timeouts, 5xx, 408, 429, a
	// garbled answer) may succeed if tried again later.
	KindTransient Kind = iota
	// KindTerminal failures (invalid_grant, invalid_client,
	// unauthorized_client) will not succeed again: a person must reconnect.
	KindTerminal
)

func (k Kind) String() string {
	switch k {
	case KindTransient:
		return "transient"
	case KindTerminal:
		return "terminal"
	default:
		return "Kind(" + strconv.Itoa(int(k)) + ")"
	}
}

// Sentinel errors, matched with [errors.Is].
var (
	// ErrReauthRequired means the grant is dead: the provider refused the
	// refresh for good, or there is no usable refresh token. A person must
	// reconnect; retrying will not help.
	ErrReauthRequired = errors.New("oauth: re-authentication required")
	// ErrTransient means the provider could not be reached or answered with
	// a temporary failure; trying later may succeed.
	ErrTransient = errors.New("oauth: provider temporarily unavailable")
)

// Error is a failed exchange with a token endpoint (or another OAuth
// endpoint). It carries the RFC 6749 §5.2 fields when the provider sent them
// and a [Kind] that says whether trying again can help.
//
// Error never holds token values: not in its fields, not in its message. The
// Description comes from the provider and is meant for administrators; show
// callers of lower trust the Code only.
type Error struct {
	// Op is what was attempted: "refresh", "exchange", "client_credentials",
	// "introspect", "revoke", "discovery".
	Op string
	// StatusCode is the HTTP status, 0 when no response arrived.
	StatusCode int
	// Code is the RFC 6749 error code ("invalid_grant"), or a code of ours
	// when the provider gave none ("http_503", "network", "invalid_response").
	Code string
	// Description is the provider's error_description, or a short account of
	// what was wrong with the answer. Admin eyes only.
	Description string
	// URI is the provider's error_uri.
	URI string
	// RetryAfter is the provider's Retry-After, zero when it sent none.
	RetryAfter time.Duration
	// OutcomeUnknown: the request may have reached the server but no answer
	// came back (a timeout or a reset after it was written; a gateway's 502
	// or 504), so whether it took effect is not known. For a refresh at a
	// provider that rotates refresh tokens, that decides whether the token
	// may be sent again (package lifecycle).
	OutcomeUnknown bool
	// Kind says whether trying again can help.
	Kind Kind
	// Err is the underlying cause (a network error, a context error), if any.
	Err error
}

// Codes of ours for failures the provider did not name.
const (
	CodeNetwork         = "network"          // no response: dial, TLS, reset, timeout
	CodeInvalidResponse = "invalid_response" // a response that is not a token response
	CodeNoRefreshToken  = "no_refresh_token" // nothing to refresh with
	CodeRefreshExpired  = "refresh_token_expired"
	// CodeOutcomeUnknown marks a grant whose last refresh may or may not
	// have reached a provider that revokes a refresh token once used: the
	// stored refresh token may be spent, and sending it again may revoke
	// the whole grant, so it is sent again only when a person says so.
	CodeOutcomeUnknown = "refresh_outcome_unknown"
)

func (e *Error) Error() string {
	msg := "oauth: " + e.Op + ": "
	switch {
	case e.Code != "" && e.StatusCode != 0:
		msg += fmt.Sprintf("%s (HTTP %d)", e.Code, e.StatusCode)
	case e.Code != "":
		msg += e.Code
	default:
		msg += fmt.Sprintf("HTTP %d", e.StatusCode)
	}
	if e.Description != "" {
		msg += ": " + e.Description
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrReauthRequired) true for terminal failures and
// errors.Is(err, ErrTransient) true for transient ones.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrReauthRequired:
		return e.Kind == KindTerminal
	case ErrTransient:
		return e.Kind == KindTransient
	}
	return false
}

// Terminal reports whether err means a person must reconnect.
func Terminal(err error) bool { return errors.Is(err, ErrReauthRequired) }

// RetryAfter returns the provider's requested wait carried by err, or zero.
func RetryAfter(err error) time.Duration {
	var oe *Error
	if errors.As(err, &oe) {
		return oe.RetryAfter
	}
	return 0
}

// terminalCodes are the RFC 6749 §5.2 codes after which a refresh will never
// succeed again with the same grant and client.
var terminalCodes = map[string]bool{
	"invalid_grant":       true,
	"invalid_client":      true,
	"unauthorized_client": true,
	// Microsoft Entra reports sign-in-frequency and consent policy failures
	// as interaction_required / consent_required: only a person can fix them.
	"interaction_required": true,
	"consent_required":     true,
	"login_required":       true,
}

// ClassifyCode returns the Kind for an RFC 6749 error code. Only the codes
// that mean the grant or the client is dead are terminal; anything else
// (invalid_request, server_error, a code we do not know) is transient, since
// a provider that cannot name its failure should not cost the user their
// connection on a guess. Persistent transient failures are turned into
// needs_reauth by the broker's lifecycle, not here.
func ClassifyCode(code string) Kind {
	if terminalCodes[code] {
		return KindTerminal
	}
	return KindTransient
}
