package mcpauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/oauth"
)

// ErrNoRegistration: the authorization server has no registration endpoint
// (RFC 7591) and no other way to get a client was available.
var ErrNoRegistration = errors.New("mcpauth: the authorization server offers no dynamic client registration")

// ClientMetadata is what [Register] asks for (RFC 7591 §2). Zero fields
// take the defaults an MCP client wants.
type ClientMetadata struct {
	// RedirectURIs are the client's callback URLs. Required.
	RedirectURIs []string `json:"redirect_uris"`
	// ClientName is shown to the person on the consent screen.
	ClientName string `json:"client_name,omitempty"`
	// ClientURI is the client's home page.
	ClientURI string `json:"client_uri,omitempty"`
	// GrantTypes default to authorization_code and refresh_token.
	GrantTypes []string `json:"grant_types"`
	// ResponseTypes default to code.
	ResponseTypes []string `json:"response_types"`
	// TokenEndpointAuthMethod defaults to the best the server supports:
	// client_secret_basic, then client_secret_post, then none.
	TokenEndpointAuthMethod string `json:"token_endpoint_auth_method"`
	// Scope is the space-separated scopes the client may ask for.
	Scope string `json:"scope,omitempty"`
}

// Registration is a client registered at an authorization server: the
// answer of RFC 7591 §3.2.1, or a pre-configured client or a Client ID
// Metadata Document URL used as client_id.
type Registration struct {
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret,omitempty"`
	// ClientSecretExpiresAt is zero when the secret does not expire.
	ClientSecretExpiresAt   time.Time `json:"-"`
	TokenEndpointAuthMethod string    `json:"token_endpoint_auth_method,omitempty"`
	RegistrationAccessToken string    `json:"registration_access_token,omitempty"`
	RegistrationClientURI   string    `json:"registration_client_uri,omitempty"`
}

// String leaves the secrets out.
func (r *Registration) String() string {
	return fmt.Sprintf("Registration{ClientID:%q, TokenEndpointAuthMethod:%q}", r.ClientID, r.TokenEndpointAuthMethod)
}

// AuthStyle is how the client authenticates at the token endpoint.
func (r *Registration) AuthStyle() oauth.AuthStyle {
	switch r.TokenEndpointAuthMethod {
	case "client_secret_post", "none":
		return oauth.AuthStyleParams
	case "client_secret_basic":
		return oauth.AuthStyleHeader
	}
	if r.ClientSecret == "" {
		return oauth.AuthStyleParams
	}
	return oauth.AuthStyleAuto
}

// chooseAuthMethod picks the token endpoint authentication method to
// register with: a confidential client when the server allows one
// (RFC 8414 §2: client_secret_basic is the default when the list is
// absent).
func chooseAuthMethod(md *oauth.Metadata) string {
	supported := md.TokenEndpointAuthMethodsSupported
	if len(supported) == 0 {
		return "client_secret_basic"
	}
	for _, m := range []string{"client_secret_basic", "client_secret_post", "none"} {
		if slices.Contains(supported, m) {
			return m
		}
	}
	return "client_secret_basic"
}

// Register registers a client at md's registration endpoint (RFC 7591
// §3.1) and returns it. Returns an error wrapping ErrNoRegistration when
// the server has no registration endpoint, and an [*oauth.Error] with the
// server's error code (invalid_redirect_uri, invalid_client_metadata) when
// it refuses.
func Register(ctx context.Context, opts Options, md *oauth.Metadata, cm ClientMetadata) (*Registration, error) {
	const op = "register"
	if md.RegistrationEndpoint == "" {
		return nil, fmt.Errorf("%w: issuer %s", ErrNoRegistration, md.Issuer)
	}
	if _, err := opts.Policy.CheckURL(md.RegistrationEndpoint); err != nil {
		return nil, err
	}
	if len(cm.RedirectURIs) == 0 {
		return nil, errors.New("mcpauth: register: no redirect_uris")
	}
	if len(cm.GrantTypes) == 0 {
		cm.GrantTypes = []string{"authorization_code", "refresh_token"}
	}
	if len(cm.ResponseTypes) == 0 {
		cm.ResponseTypes = []string{"code"}
	}
	if cm.TokenEndpointAuthMethod == "" {
		cm.TokenEndpointAuthMethod = chooseAuthMethod(md)
	}
	body, err := json.Marshal(cm)
	if err != nil {
		return nil, fmt.Errorf("mcpauth: register: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, md.RegistrationEndpoint, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("mcpauth: register: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := opts.client().Do(req)
	if err != nil {
		return nil, oauth.NetworkError(op, err)
	}
	defer resp.Body.Close()
	b, err := readDocument(resp.Body)
	if err != nil {
		return nil, oauth.NetworkError(op, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, oauth.ParseErrorResponse(op, resp.StatusCode, resp.Header, b, time.Now())
	}
	var wire struct {
		Registration
		ClientSecretExpiresAt int64 `json:"client_secret_expires_at"`
	}
	if err := json.Unmarshal(b, &wire); err != nil {
		return nil, &oauth.Error{Op: op, StatusCode: resp.StatusCode, Code: oauth.CodeInvalidResponse,
			Kind: oauth.KindTerminal, Description: "registration response is not a JSON object"}
	}
	reg := wire.Registration
	if strings.TrimSpace(reg.ClientID) == "" {
		return nil, &oauth.Error{Op: op, StatusCode: resp.StatusCode, Code: oauth.CodeInvalidResponse,
			Kind: oauth.KindTerminal, Description: "registration response has no client_id"}
	}
	if wire.ClientSecretExpiresAt > 0 {
		reg.ClientSecretExpiresAt = time.Unix(wire.ClientSecretExpiresAt, 0)
	}
	if reg.TokenEndpointAuthMethod == "" {
		// RFC 7591 §3.2.1: the server returns the registered metadata; a
		// server that leaves it out registered what was asked.
		reg.TokenEndpointAuthMethod = cm.TokenEndpointAuthMethod
		if reg.ClientSecret == "" {
			reg.TokenEndpointAuthMethod = "none"
		}
	}
	return &reg, nil
}
