package oauth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"
)

func TestErrorMessage(t *testing.T) {
	cause := errors.New("connection reset by peer")
	tests := []struct {
		name string
		err  *Error
		want string
	}{
		{"code and status", &Error{Op: "refresh", StatusCode: 400, Code: "invalid_grant"}, "oauth: refresh: invalid_grant (HTTP 400)"},
		{"code only", &Error{Op: "refresh", Code: CodeNetwork}, "oauth: refresh: network"},
		{"status only", &Error{Op: "revoke", StatusCode: 503}, "oauth: revoke: HTTP 503"},
		{"description", &Error{Op: "refresh", StatusCode: 400, Code: "invalid_grant", Description: "Token has been expired or revoked."},
			"oauth: refresh: invalid_grant (HTTP 400): Token has been expired or revoked."},
		{"cause", &Error{Op: "exchange", Code: CodeNetwork, Err: cause}, "oauth: exchange: network: connection reset by peer"},
		{"description and cause", &Error{Op: "introspect", StatusCode: 502, Code: "http_502", Description: "HTML page", Err: io.ErrUnexpectedEOF},
			"oauth: introspect: http_502 (HTTP 502): HTML page: unexpected EOF"},
		{"URI and RetryAfter stay out of the message", &Error{Op: "refresh", StatusCode: 429, Code: "http_429", URI: "https://example.invalid/e", RetryAfter: time.Minute},
			"oauth: refresh: http_429 (HTTP 429)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestErrorIsAs(t *testing.T) {
	terminal := &Error{Op: "refresh", StatusCode: 400, Code: "invalid_grant", Kind: KindTerminal}
	transient := &Error{Op: "refresh", Code: CodeNetwork, Kind: KindTransient, Err: context.DeadlineExceeded}
	other := errors.New("oauth: something else")
	tests := []struct {
		name       string
		err        error
		reauth     bool
		transient  bool
		deadline   bool
		retryAfter time.Duration
	}{
		{"terminal", terminal, true, false, false, 0},
		{"terminal wrapped", fmt.Errorf("broker: refresh conn-1: %w", terminal), true, false, false, 0},
		{"transient with cause", transient, false, true, true, 0},
		{"transient wrapped twice", fmt.Errorf("a: %w", fmt.Errorf("b: %w", transient)), false, true, true, 0},
		{"retry after", &Error{Code: "http_429", StatusCode: 429, RetryAfter: 30 * time.Second}, false, true, false, 30 * time.Second},
		{"joined", errors.Join(other, terminal), true, false, false, 0},
		{"not an oauth error", other, false, false, false, 0},
		{"nil", nil, false, false, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := errors.Is(tt.err, ErrReauthRequired); got != tt.reauth {
				t.Errorf("Is(ErrReauthRequired) = %t", got)
			}
			if got := Terminal(tt.err); got != tt.reauth {
				t.Errorf("Terminal = %t", got)
			}
			if got := errors.Is(tt.err, ErrTransient); got != tt.transient {
				t.Errorf("Is(ErrTransient) = %t", got)
			}
			if got := errors.Is(tt.err, context.DeadlineExceeded); got != tt.deadline {
				t.Errorf("Is(DeadlineExceeded) = %t", got)
			}
			if got := RetryAfter(tt.err); got != tt.retryAfter {
				t.Errorf("RetryAfter = %v", got)
			}
			var oe *Error
			if got := errors.As(tt.err, &oe); got != (tt.reauth || tt.transient) {
				t.Errorf("As(*Error) = %t", got)
			}
		})
	}
	if errors.Is(terminal, other) || errors.Is(terminal, context.Canceled) {
		t.Error("Is matches an unrelated target")
	}
	if terminal.Unwrap() != nil || !errors.Is(transient.Unwrap(), context.DeadlineExceeded) {
		t.Error("Unwrap does not return the cause")
	}
	if Kind(7).String() != "Kind(7)" || KindTerminal.String() != "terminal" || KindTransient.String() != "transient" {
		t.Errorf("Kind strings: %s %s %s", Kind(7), KindTerminal, KindTransient)
	}
	// A Kind outside the two known ones matches neither sentinel.
	odd := &Error{Kind: Kind(7)}
	if errors.Is(odd, ErrReauthRequired) || errors.Is(odd, ErrTransient) {
		t.Error("unknown Kind matches a sentinel")
	}
}

func TestClassifyCode(t *testing.T) {
	tests := []struct {
		code string
		want Kind
	}{
		{"invalid_grant", KindTerminal},
		{"invalid_client", KindTerminal},
		{"unauthorized_client", KindTerminal},
		{"interaction_required", KindTerminal},
		{"consent_required", KindTerminal},
		{"login_required", KindTerminal},
		{"invalid_request", KindTransient},
		{"invalid_scope", KindTransient},
		{"unsupported_grant_type", KindTransient},
		{"server_error", KindTransient},
		{"temporarily_unavailable", KindTransient},
		{"slow_down", KindTransient},
		{"http_401", KindTransient},
		{CodeNetwork, KindTransient},
		{CodeInvalidResponse, KindTransient},
		{"", KindTransient},
		// Exact match: the parsers lower-case provider codes first.
		{"INVALID_GRANT", KindTransient},
	}
	for _, tt := range tests {
		if got := ClassifyCode(tt.code); got != tt.want {
			t.Errorf("ClassifyCode(%q) = %v, want %v", tt.code, got, tt.want)
		}
	}
}
