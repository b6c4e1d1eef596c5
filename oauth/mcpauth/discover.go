package mcpauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/tokenbroker/tokenbroker/oauth"
)

// Errors of [Discover], matched with [errors.Is]. Each is wrapped with the
// URL and detail that explain it.
var (
	// ErrNoAuthorization: the server answered the unauthenticated probe
	// successfully; it wants no token.
	ErrNoAuthorization = errors.New("mcpauth: the MCP server does not require authorization")
	// ErrNoResourceMetadata: no Protected Resource Metadata (RFC 9728) was
	// found at the challenge's resource_metadata nor at the well-known URIs.
	ErrNoResourceMetadata = errors.New("mcpauth: no protected resource metadata")
	// ErrResourceMismatch: the metadata's resource is not the server asked
	// about (RFC 9728 §3.3); using it would bind tokens to another server.
	ErrResourceMismatch = errors.New("mcpauth: protected resource metadata names another resource")
	// ErrNoAuthServerMetadata: none of the well-known locations of the
	// authorization server's metadata has a document.
	ErrNoAuthServerMetadata = errors.New("mcpauth: no authorization server metadata")
	// ErrIssuerMismatch: the authorization server's metadata names another
	// issuer than the one it was fetched for (RFC 8414 §3.3).
	ErrIssuerMismatch = errors.New("mcpauth: authorization server metadata names another issuer")
	// ErrPKCEUnsupported: the authorization server does not advertise
	// PKCE with S256, which the MCP specification requires of it.
	ErrPKCEUnsupported = errors.New("mcpauth: the authorization server does not advertise PKCE S256 (code_challenge_methods_supported)")
)

// ResourceMetadata is the part of an RFC 9728 document an MCP client uses.
type ResourceMetadata struct {
	Resource               string   `json:"resource"`
	AuthorizationServers   []string `json:"authorization_servers"`
	ScopesSupported        []string `json:"scopes_supported,omitempty"`
	BearerMethodsSupported []string `json:"bearer_methods_supported,omitempty"`
}

// Discovery is what [Discover] learned about one MCP server.
type Discovery struct {
	// ServerURL is the MCP endpoint as given.
	ServerURL string
	// Resource is the RFC 8707 resource indicator to send on every
	// authorization and token request: the resource named by the
	// server's metadata (checked to be the server or a parent of it).
	Resource string
	// ResourceMetadataURL is where the Protected Resource Metadata came
	// from.
	ResourceMetadataURL string
	ResourceMetadata    ResourceMetadata
	// Challenge is the Bearer challenge of the unauthenticated probe, if
	// the server sent one.
	Challenge *Challenge
	// Issuer is the authorization server used (the first the metadata
	// lists) and Metadata its RFC 8414 / OpenID Connect metadata.
	Issuer   string
	Metadata *oauth.Metadata
}

// Options configures [Discover] and [Register].
type Options struct {
	// Client makes the requests. Default: [NewHTTPClient] with Policy.
	Client *http.Client
	// Policy checks every URL before it is fetched.
	Policy HostPolicy
}

func (o Options) client() *http.Client {
	if o.Client != nil {
		return o.Client
	}
	return NewHTTPClient(o.Policy, 0, nil)
}

// Discover finds the authorization server of the MCP server at serverURL
// as the MCP authorization specification asks of a client:
//
//  1. an unauthenticated probe (an initialize request) whose 401 answer's
//     Bearer challenge may name the resource_metadata URL;
//  2. else the path-specific, then the root, well-known URI of the
//     Protected Resource Metadata (RFC 9728 §3.1);
//  3. the first authorization server that metadata lists, and its metadata
//     by RFC 8414 (path insertion), then OpenID Connect Discovery (path
//     insertion, then appending), whose issuer must match exactly;
//  4. PKCE with S256 must be advertised.
func Discover(ctx context.Context, opts Options, serverURL string) (*Discovery, error) {
	server, err := opts.Policy.CheckURL(serverURL)
	if err != nil {
		return nil, err
	}
	client := opts.client()
	d := &Discovery{ServerURL: serverURL}

	ch, open, err := probe(ctx, client, serverURL)
	if err != nil {
		return nil, err
	}
	d.Challenge = ch

	var candidates []string
	if ch != nil && ch.Params["resource_metadata"] != "" {
		candidates = append(candidates, ch.Params["resource_metadata"])
	}
	candidates = append(candidates, wellKnownPRM(server)...)
	var tried []string
	for _, u := range candidates {
		if _, err := opts.Policy.CheckURL(u); err != nil {
			return nil, fmt.Errorf("mcpauth: resource metadata URL: %w", err)
		}
		tried = append(tried, u)
		md, found, err := fetchResourceMetadata(ctx, client, u)
		if err != nil {
			return nil, err
		}
		if found {
			d.ResourceMetadataURL, d.ResourceMetadata = u, *md
			break
		}
	}
	if d.ResourceMetadataURL == "" {
		if open {
			return nil, fmt.Errorf("%w: %s answered without a token and publishes no resource metadata", ErrNoAuthorization, serverURL)
		}
		return nil, fmt.Errorf("%w for %s (tried %s)", ErrNoResourceMetadata, serverURL, strings.Join(tried, ", "))
	}
	prm := d.ResourceMetadata
	if err := resourceCovers(prm.Resource, server); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrResourceMismatch, d.ResourceMetadataURL, err)
	}
	d.Resource = prm.Resource
	if len(prm.AuthorizationServers) == 0 {
		return nil, fmt.Errorf("mcpauth: %s lists no authorization_servers", d.ResourceMetadataURL)
	}
	d.Issuer = prm.AuthorizationServers[0]
	if _, err := opts.Policy.CheckURL(d.Issuer); err != nil {
		return nil, fmt.Errorf("mcpauth: authorization server: %w", err)
	}
	md, err := FetchAuthServerMetadata(ctx, opts, d.Issuer)
	if err != nil {
		return nil, err
	}
	d.Metadata = md
	return d, nil
}

// FetchAuthServerMetadata fetches and checks the metadata of the
// authorization server issuer, trying in order the locations the MCP
// specification lists: RFC 8414 path insertion, OpenID Connect path
// insertion, OpenID Connect path appending (the last two are one location
// for an issuer without a path). The document's issuer must equal issuer,
// its endpoints must pass the host policy, and it must advertise PKCE S256.
func FetchAuthServerMetadata(ctx context.Context, opts Options, issuer string) (*oauth.Metadata, error) {
	u, err := opts.Policy.CheckURL(issuer)
	if err != nil {
		return nil, err
	}
	client := opts.client()
	path := strings.TrimSuffix(u.EscapedPath(), "/")
	origin := u.Scheme + "://" + u.Host
	locations := []string{origin + "/.well-known/oauth-authorization-server" + path}
	if path != "" {
		locations = append(locations, origin+"/.well-known/openid-configuration"+path)
	}
	locations = append(locations, origin+path+"/.well-known/openid-configuration")
	var md *oauth.Metadata
	for _, loc := range locations {
		md, err = oauth.FetchMetadata(ctx, client, loc, issuer)
		if err == nil {
			break
		}
		var oe *oauth.Error
		if errors.As(err, &oe) && oe.Code == oauth.CodeIssuerMismatch {
			return nil, fmt.Errorf("%w: %w", ErrIssuerMismatch, err)
		}
		if !oauth.DocumentMissing(err) {
			return nil, fmt.Errorf("mcpauth: authorization server metadata of %s: %w", issuer, err)
		}
	}
	if md == nil {
		return nil, fmt.Errorf("%w for issuer %s (tried %s)", ErrNoAuthServerMetadata, issuer, strings.Join(locations, ", "))
	}
	if !slices.Contains(md.CodeChallengeMethodsSupported, "S256") {
		return nil, fmt.Errorf("%w: issuer %s", ErrPKCEUnsupported, issuer)
	}
	if md.AuthorizationEndpoint == "" || md.TokenEndpoint == "" {
		return nil, fmt.Errorf("mcpauth: issuer %s publishes no authorization_endpoint or token_endpoint", issuer)
	}
	for _, e := range []struct{ name, u string }{
		{"authorization_endpoint", md.AuthorizationEndpoint},
		{"token_endpoint", md.TokenEndpoint},
		{"registration_endpoint", md.RegistrationEndpoint},
		{"revocation_endpoint", md.RevocationEndpoint},
	} {
		if e.u == "" {
			continue
		}
		if _, err := opts.Policy.CheckURL(e.u); err != nil {
			return nil, fmt.Errorf("mcpauth: issuer %s: %s: %w", issuer, e.name, err)
		}
	}
	return md, nil
}

// probe sends an unauthenticated initialize request and returns the Bearer
// challenge of a 401 answer (nil when there was none), and whether the
// server answered successfully without a token. Such a server may still
// protect other calls (the initialize handshake open, tools/call not), so
// its resource metadata is looked for all the same.
func probe(ctx context.Context, client *http.Client, serverURL string) (*Challenge, bool, error) {
	body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"tokenbroker","version":"1"}}}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, serverURL, strings.NewReader(body))
	if err != nil {
		return nil, false, fmt.Errorf("mcpauth: probe %s: %w", serverURL, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := client.Do(req)
	if err != nil {
		return nil, false, fmt.Errorf("mcpauth: probe %s: %w", serverURL, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, MaxDocument))
	resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		return nil, true, nil
	}
	if c, ok := BearerChallenge(resp.Header); ok {
		return &c, false, nil
	}
	return nil, false, nil
}

// wellKnownPRM lists the RFC 9728 §3.1 URIs for server: with the path
// inserted after the well-known prefix, then at the root.
func wellKnownPRM(server *url.URL) []string {
	origin := server.Scheme + "://" + server.Host
	path := strings.TrimSuffix(server.EscapedPath(), "/")
	root := origin + "/.well-known/oauth-protected-resource"
	if path == "" {
		return []string{root}
	}
	return []string{root + path, root}
}

// fetchResourceMetadata fetches one PRM document; found is false when
// nothing is there (4xx).
func fetchResourceMetadata(ctx context.Context, client *http.Client, u string) (*ResourceMetadata, bool, error) {
	status, _, body, err := get(ctx, client, u)
	if err != nil {
		return nil, false, fmt.Errorf("mcpauth: resource metadata %s: %w", u, err)
	}
	switch {
	case status/100 == 4:
		return nil, false, nil
	case status/100 != 2:
		return nil, false, fmt.Errorf("mcpauth: resource metadata %s: HTTP %d", u, status)
	}
	var md ResourceMetadata
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&md); err != nil {
		return nil, false, fmt.Errorf("mcpauth: resource metadata %s is not a JSON object: %w", u, err)
	}
	if md.Resource == "" {
		return nil, false, fmt.Errorf("mcpauth: resource metadata %s has no resource", u)
	}
	return &md, true, nil
}

// resourceCovers checks that resource identifies server: the same scheme
// and host, and a path that is server's or a parent of it, segment-wise.
func resourceCovers(resource string, server *url.URL) error {
	r, err := url.Parse(resource)
	if err != nil || !r.IsAbs() || r.Fragment != "" {
		return fmt.Errorf("resource %.200q is not an absolute URI without fragment", resource)
	}
	if !strings.EqualFold(r.Scheme, server.Scheme) || !strings.EqualFold(r.Host, server.Host) {
		return fmt.Errorf("resource %.200q is not on %s://%s", resource, server.Scheme, server.Host)
	}
	rp := strings.TrimSuffix(r.EscapedPath(), "/")
	sp := strings.TrimSuffix(server.EscapedPath(), "/")
	if rp != "" && sp != rp && !strings.HasPrefix(sp, rp+"/") {
		return fmt.Errorf("resource %.200q does not cover path %q", resource, server.Path)
	}
	return nil
}

// Scopes chooses the scopes to request, as the MCP specification's scope
// selection strategy says: those of the challenge, else all the resource
// metadata lists; plus offline_access when the authorization server lists
// it (so that a refresh token is issued), and any of extra not yet there.
func (d *Discovery) Scopes(challenge *Challenge, extra ...string) []string {
	var out []string
	if challenge != nil {
		out = challenge.Scopes()
	}
	if len(out) == 0 {
		out = slices.Clone(d.ResourceMetadata.ScopesSupported)
	}
	if d.Metadata != nil && slices.Contains(d.Metadata.ScopesSupported, "offline_access") && !slices.Contains(out, "offline_access") {
		out = append(out, "offline_access")
	}
	for _, s := range extra {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// EndpointConfig returns the configuration of an [oauth.Endpoint] for reg
// at this server's authorization server, whose every token request carries
// the resource indicator (RFC 8707 §2.2). The caller adds HTTPClient (use
// one from [NewHTTPClient]), clock and logger.
func (d *Discovery) EndpointConfig(reg *Registration) oauth.Config {
	return EndpointConfig(d.Metadata, reg, d.Resource)
}

// EndpointConfig is [Discovery.EndpointConfig] for a stored registration
// and resource.
func EndpointConfig(md *oauth.Metadata, reg *Registration, resource string) oauth.Config {
	cfg := oauth.Config{
		ClientID:      reg.ClientID,
		ClientSecret:  reg.ClientSecret,
		TokenURL:      md.TokenEndpoint,
		AuthorizeURL:  md.AuthorizationEndpoint,
		RevocationURL: md.RevocationEndpoint,
		AuthStyle:     reg.AuthStyle(),
	}
	if resource != "" {
		cfg.TokenParams = url.Values{"resource": {resource}}
	}
	return cfg
}
