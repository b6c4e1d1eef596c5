package authztest

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ory/fosite"
)

// What an authorization server of MCP servers adds (Options.Resource,
// Options.DynamicRegistration): resource indicators (RFC 8707) and dynamic
// client registration (RFC 7591).

const registrationPath = "/oauth2/register"

// errInvalidTarget is RFC 8707 §2's error for a missing or unknown
// resource.
var errInvalidTarget = &fosite.RFC6749Error{
	ErrorField:       "invalid_target",
	DescriptionField: "The requested resource is invalid, missing, unknown, or malformed.",
	CodeField:        http.StatusBadRequest,
}

// counters of mcp.go, kept apart from Server's own fields.
type mcpCounters struct {
	registrations   atomic.Int64
	resourceRefused atomic.Int64
	resourceSeen    atomic.Int64
}

func (s *Server) mcp() *mcpCounters {
	s.mcpOnce.Do(func() { s.mcpC = &mcpCounters{} })
	return s.mcpC
}

// RegistrationURL is the RFC 7591 registration endpoint.
func (s *Server) RegistrationURL() string { return s.URL + registrationPath }

// Registrations counts clients registered dynamically.
func (s *Server) Registrations() int64 { return s.mcp().registrations.Load() }

// ResourceRefused counts authorization and token requests refused because
// their resource indicator was missing or not [Options.Resource].
func (s *Server) ResourceRefused() int64 { return s.mcp().resourceRefused.Load() }

// ResourceSeen counts code exchanges and refreshes that carried
// [Options.Resource].
func (s *Server) ResourceSeen() int64 { return s.mcp().resourceSeen.Load() }

func (s *Server) checkAuthorizeResource(r *http.Request) bool {
	if s.opts.Resource == "" {
		return true
	}
	if r.URL.Query().Get("resource") == s.opts.Resource {
		return true
	}
	s.mcp().resourceRefused.Add(1)
	return false
}

// checkTokenResource refuses an authorization_code or refresh_token grant
// without the resource (RFC 8707 §2.2); nil lets the request through.
func (s *Server) checkTokenResource(r *http.Request) *response {
	if s.opts.Resource == "" {
		return nil
	}
	if err := r.ParseForm(); err != nil {
		return nil // fosite answers it
	}
	switch r.PostForm.Get("grant_type") {
	case "authorization_code", "refresh_token":
	default:
		return nil
	}
	if r.PostForm.Get("resource") == s.opts.Resource {
		s.mcp().resourceSeen.Add(1)
		return nil
	}
	s.mcp().resourceRefused.Add(1)
	rec := newResponse()
	rec.status = http.StatusBadRequest
	rec.header.Set("Content-Type", "application/json")
	_ = json.NewEncoder(&rec.body).Encode(map[string]string{"error": "invalid_target",
		"error_description": "the resource parameter must be " + s.opts.Resource})
	return rec
}

// registrationRequest is RFC 7591 §2's client metadata, the part used.
type registrationRequest struct {
	RedirectURIs            []string `json:"redirect_uris"`
	GrantTypes              []string `json:"grant_types"`
	ResponseTypes           []string `json:"response_types"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	ClientName              string   `json:"client_name"`
	Scope                   string   `json:"scope"`
}

func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	fail := func(code, desc string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
	}
	var req registrationRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		fail("invalid_client_metadata", "the body is not a JSON object")
		return
	}
	if len(req.RedirectURIs) == 0 {
		fail("invalid_redirect_uri", "redirect_uris is required")
		return
	}
	for _, u := range req.RedirectURIs {
		if p, err := url.Parse(u); err != nil || !p.IsAbs() || p.Fragment != "" {
			fail("invalid_redirect_uri", "redirect_uris must be absolute URIs without fragment")
			return
		}
	}
	if len(req.GrantTypes) == 0 {
		req.GrantTypes = []string{"authorization_code"}
	}
	for _, g := range req.GrantTypes {
		if g != "authorization_code" && g != "refresh_token" {
			fail("invalid_client_metadata", "grant_types may only be authorization_code and refresh_token")
			return
		}
	}
	method := req.TokenEndpointAuthMethod
	if method == "" {
		method = AuthMethodBasic
	}
	if method != AuthMethodBasic && method != AuthMethodPost && method != "none" {
		fail("invalid_client_metadata", "unsupported token_endpoint_auth_method")
		return
	}
	id := "dyn-" + rand.Text()
	secret := ""
	if method != "none" {
		secret = rand.Text() + rand.Text()
	}
	var audience []string
	if s.opts.Resource != "" {
		audience = []string{s.opts.Resource}
	}
	client := &fosite.DefaultOpenIDConnectClient{
		DefaultClient: &fosite.DefaultClient{
			ID:            id,
			Secret:        []byte(secret),
			RedirectURIs:  slices.Clone(req.RedirectURIs),
			ResponseTypes: []string{"code"},
			GrantTypes:    slices.Clone(req.GrantTypes),
			Scopes:        s.opts.Scopes,
			Audience:      audience,
			Public:        method == "none",
		},
		TokenEndpointAuthMethod: method,
	}
	s.store.setClient(client)
	s.mcp().registrations.Add(1)
	ans := map[string]any{
		"client_id":                  id,
		"client_id_issued_at":        time.Now().Unix(),
		"redirect_uris":              req.RedirectURIs,
		"grant_types":                req.GrantTypes,
		"response_types":             []string{"code"},
		"token_endpoint_auth_method": method,
	}
	if secret != "" {
		ans["client_secret"] = secret
		ans["client_secret_expires_at"] = 0
	}
	if req.ClientName != "" {
		ans["client_name"] = req.ClientName
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(ans)
}

// ForgetClient deletes a client, as a server that lost its registrations
// would: its requests then fail with invalid_client.
func (s *Server) ForgetClient(id string) {
	s.store.mu.Lock()
	defer s.store.mu.Unlock()
	delete(s.store.clients, id)
}

// TokenInfo is what the server knows about an access token, for a
// resource server that verifies the tokens it is sent.
type TokenInfo struct {
	Active    bool
	Scopes    []string
	Audience  []string
	ExpiresAt time.Time
	ClientID  string
}

// Introspect asks the server's own introspection endpoint about token
// (RFC 7662), authenticated as the built-in client. It returns an error,
// never fails a test: resource servers call it from their handlers.
func (s *Server) Introspect(ctx context.Context, token string) (TokenInfo, error) {
	status, body, err := s.post(ctx, s.IntrospectionURL(), url.Values{"token": {token}})
	if err != nil {
		return TokenInfo{}, err
	}
	var ans struct {
		Active   bool     `json:"active"`
		Scope    string   `json:"scope"`
		Aud      []string `json:"aud"`
		Exp      int64    `json:"exp"`
		ClientID string   `json:"client_id"`
	}
	if status != http.StatusOK {
		return TokenInfo{}, fmt.Errorf("authztest: introspection answered %d", status)
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		return TokenInfo{}, errors.New("authztest: introspection answer is not JSON")
	}
	ti := TokenInfo{Active: ans.Active, Scopes: strings.Fields(ans.Scope), Audience: ans.Aud, ClientID: ans.ClientID}
	if ans.Exp > 0 {
		ti.ExpiresAt = time.Unix(ans.Exp, 0)
	}
	return ti, nil
}
