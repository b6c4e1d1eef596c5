package oauth

import (
	"context"
	"errors"
	"net/http"
	"net/url"
)

// ErrNoRevocation is returned by [Endpoint.Revoke] when no revocation
// endpoint is configured or published by the issuer.
var ErrNoRevocation = errors.New("oauth: revoke: no revocation endpoint configured or discovered")

// Revoke asks the revocation endpoint to invalidate token (RFC 7009 §2.1),
// authenticating as the client the same way as at the token endpoint. hint
// is the token_type_hint ("access_token" or "refresh_token"), sent when not
// empty. Revoking a refresh token also ends the grant's access tokens at
// most providers.
//
// Any 200 is success: RFC 7009 §2.2 has the server answer 200 for a token
// that was already invalid, so "already revoked" is not an error. It returns
// [ErrNoRevocation] when there is no endpoint to ask, and an [*Error] with Op
// "revoke" otherwise (RFC 7009 §2.2.1: unsupported_token_type, or 503 with
// Retry-After). Transient failures are retried; revocation is idempotent.
func (e *Endpoint) Revoke(ctx context.Context, token, hint string) error {
	const op = "revoke"
	if token == "" {
		return errors.New("oauth: revoke: token is empty")
	}
	endpointURL, err := e.resolve(ctx, e.cfg.RevocationURL, func(m *Metadata) string { return m.RevocationEndpoint })
	if err != nil {
		return err
	}
	if endpointURL == "" {
		return ErrNoRevocation
	}
	form := url.Values{"token": {token}}
	if hint != "" {
		form.Set("token_type_hint", hint)
	}
	return e.call(ctx, op, endpointURL, form, func(status int, header http.Header, body []byte) error {
		if status == http.StatusOK {
			return nil
		}
		return ParseErrorResponse(op, status, header, body, e.now())
	})
}
