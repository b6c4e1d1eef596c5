package oauth

import (
	"context"
	"errors"
	"fmt"
)

// ErrIssuerMismatch is returned by [CheckResponseIssuer] for an
// authorization response that must not be used (RFC 9207 §2.4): its iss is
// not the expected issuer, or it lacks an iss the server promised.
var ErrIssuerMismatch = errors.New("oauth: authorization response issuer mismatch (RFC 9207)")

// ResponseIssuer returns the issuer an authorization response's iss
// parameter must equal and whether the server promises to send one
// (authorization_response_iss_parameter_supported, RFC 9207 §3). Without a
// configured Issuer it returns "" and false. When the metadata cannot be
// fetched the promise is taken as not made; the issuer is still known.
func (e *Endpoint) ResponseIssuer(ctx context.Context) (issuer string, required bool) {
	if e.cfg.Issuer == "" {
		return "", false
	}
	md, err := e.discovery.Get(ctx, e.client, e.cfg.Issuer)
	if err != nil {
		return e.cfg.Issuer, false
	}
	return e.cfg.Issuer, md.AuthorizationResponseIssParameterSupported
}

// CheckResponseIssuer applies RFC 9207 §2.4 to an authorization response
// (success or error) whose iss parameter is iss (present tells an empty
// one from none): an iss must equal expected exactly, by simple string
// comparison; a server that promised one must have sent it. With no
// expected issuer an iss cannot be verified, and is refused as well:
// configure the provider's issuer. Errors wrap [ErrIssuerMismatch].
func CheckResponseIssuer(expected string, required bool, iss string, present bool) error {
	switch {
	case present && expected == "":
		return fmt.Errorf("%w: the response names issuer %.200q but no issuer is configured for this provider to compare it with; set the provider's issuer", ErrIssuerMismatch, iss)
	case present && iss != expected:
		return fmt.Errorf("%w: the response names issuer %.200q, want %q", ErrIssuerMismatch, iss, expected)
	case !present && required:
		return fmt.Errorf("%w: issuer %q promises an iss parameter and the response has none", ErrIssuerMismatch, expected)
	}
	return nil
}
