package oauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// Discovery defaults.
const (
	// DefaultDiscoveryTTL is how long fetched metadata is trusted.
	DefaultDiscoveryTTL = time.Hour
	// DefaultDiscoveryFailureTTL is how long a failed lookup is remembered,
	// so that a broken issuer costs one request per interval instead of one
	// per token request.
	DefaultDiscoveryFailureTTL = 30 * time.Second
	// discoveryFetchTimeout bounds a shared fetch, which runs detached from
	// the callers' contexts.
	discoveryFetchTimeout = 30 * time.Second
)

// CodeIssuerMismatch is the [Error.Code] of a metadata document that names a
// different issuer than the one asked for (RFC 8414 §3.3). Using it would let
// one server impersonate another, so it is terminal.
const CodeIssuerMismatch = "issuer_mismatch"

// Metadata is an authorization server's metadata (RFC 8414 §2, and the
// OpenID Connect Discovery 1.0 §3 fields tokenbroker uses). Endpoint URLs
// are validated as absolute http(s) URLs; empty means not published.
type Metadata struct {
	Issuer                string
	AuthorizationEndpoint string
	TokenEndpoint         string
	IntrospectionEndpoint string
	RevocationEndpoint    string
	JWKSURI               string
	UserinfoEndpoint      string
	RegistrationEndpoint  string

	ScopesSupported                           []string
	ResponseTypesSupported                    []string
	GrantTypesSupported                       []string
	TokenEndpointAuthMethodsSupported         []string
	CodeChallengeMethodsSupported             []string
	IntrospectionEndpointAuthMethodsSupported []string
	RevocationEndpointAuthMethodsSupported    []string

	// AuthorizationResponseIssParameterSupported: the server adds iss to
	// its authorization responses (RFC 9207 §3), so one without it is
	// refused.
	AuthorizationResponseIssParameterSupported bool
	// ClientIDMetadataDocumentSupported: the server accepts an https URL
	// as client_id and fetches the client's metadata from it (OAuth
	// Client ID Metadata Document, as the MCP authorization specification
	// of 2025-11-25 uses it).
	ClientIDMetadataDocumentSupported bool
}

func (m *Metadata) clone() *Metadata {
	c := *m
	c.ScopesSupported = slices.Clone(m.ScopesSupported)
	c.ResponseTypesSupported = slices.Clone(m.ResponseTypesSupported)
	c.GrantTypesSupported = slices.Clone(m.GrantTypesSupported)
	c.TokenEndpointAuthMethodsSupported = slices.Clone(m.TokenEndpointAuthMethodsSupported)
	c.CodeChallengeMethodsSupported = slices.Clone(m.CodeChallengeMethodsSupported)
	c.IntrospectionEndpointAuthMethodsSupported = slices.Clone(m.IntrospectionEndpointAuthMethodsSupported)
	c.RevocationEndpointAuthMethodsSupported = slices.Clone(m.RevocationEndpointAuthMethodsSupported)
	return &c
}

// DiscoveryCache fetches and caches authorization server metadata. It is
// safe for concurrent use and meant to be shared: concurrent first lookups
// of one issuer make a single request.
//
// Set the exported fields before first use.
type DiscoveryCache struct {
	// TTL is how long a fetched document is used. Default
	// [DefaultDiscoveryTTL].
	TTL time.Duration
	// FailureTTL is how long a failed lookup is remembered. Default
	// [DefaultDiscoveryFailureTTL], and never longer than TTL.
	FailureTTL time.Duration
	// Now is the clock. Default [time.Now].
	Now func() time.Time

	group   singleflight.Group
	mu      sync.Mutex
	entries map[string]discoveryEntry
}

type discoveryEntry struct {
	md    *Metadata
	err   error
	until time.Time
}

// NewDiscoveryCache returns a cache that keeps documents for ttl
// ([DefaultDiscoveryTTL] when ttl is not positive).
func NewDiscoveryCache(ttl time.Duration) *DiscoveryCache {
	return &DiscoveryCache{TTL: ttl}
}

func (c *DiscoveryCache) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *DiscoveryCache) ttls() (ok, failed time.Duration) {
	ok, failed = c.TTL, c.FailureTTL
	if ok <= 0 {
		ok = DefaultDiscoveryTTL
	}
	if failed <= 0 {
		failed = DefaultDiscoveryFailureTTL
	}
	return ok, min(ok, failed)
}

// Get returns issuer's metadata, from the cache or fetched with client (a
// client with a [DefaultHTTPTimeout] timeout when nil). The result is the
// caller's copy.
//
// It asks RFC 8414 first (/.well-known/oauth-authorization-server, inserted
// before the issuer's path as §3.1 requires) and, when that document is not
// there, OpenID Connect Discovery (/.well-known/openid-configuration,
// appended to the issuer). Either document must name exactly the requested
// issuer (RFC 8414 §3.3, OpenID Connect Discovery §4.3), or Get fails with
// [CodeIssuerMismatch].
//
// Failures are [*Error]s with Op "discovery". A fetch is shared by everyone
// asking for the same issuer meanwhile and runs detached from their
// contexts, so one caller giving up does not fail the others; a caller whose
// ctx ends stops waiting at once.
func (c *DiscoveryCache) Get(ctx context.Context, client *http.Client, issuer string) (*Metadata, error) {
	if err := checkIssuer(issuer); err != nil {
		return nil, fmt.Errorf("oauth: discovery: issuer: %w", err)
	}
	if client == nil {
		client = &http.Client{Timeout: DefaultHTTPTimeout}
	}
	if md, err, ok := c.lookup(issuer); ok {
		return cloneResult(md, err)
	}
	ch := c.group.DoChan(issuer, func() (any, error) {
		// A flight that ended just before this one began has stored its
		// result; use it rather than ask again.
		if md, err, ok := c.lookup(issuer); ok {
			return md, err
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), discoveryFetchTimeout)
		defer cancel()
		md, err := c.fetch(fctx, client, issuer)
		c.store(issuer, md, err)
		return md, err
	})
	select {
	case <-ctx.Done():
		return nil, NetworkError("discovery", ctx.Err())
	case r := <-ch:
		md, _ := r.Val.(*Metadata)
		return cloneResult(md, r.Err)
	}
}

func cloneResult(md *Metadata, err error) (*Metadata, error) {
	if err != nil {
		return nil, err
	}
	return md.clone(), nil
}

func (c *DiscoveryCache) lookup(issuer string) (*Metadata, error, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ent, ok := c.entries[issuer]
	if !ok || !c.now().Before(ent.until) {
		return nil, nil, false
	}
	return ent.md, ent.err, true
}

func (c *DiscoveryCache) store(issuer string, md *Metadata, err error) {
	ok, failed := c.ttls()
	ttl := ok
	if err != nil {
		ttl = failed
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = make(map[string]discoveryEntry)
	}
	c.entries[issuer] = discoveryEntry{md: md, err: err, until: c.now().Add(ttl)}
}

// fetch asks RFC 8414 first, then OpenID Connect Discovery.
func (c *DiscoveryCache) fetch(ctx context.Context, client *http.Client, issuer string) (*Metadata, error) {
	md, err := c.fetchDocument(ctx, client, rfc8414URL(issuer), issuer)
	if err == nil || !documentMissing(err) {
		return md, err
	}
	return c.fetchDocument(ctx, client, oidcDiscoveryURL(issuer), issuer)
}

// documentMissing reports whether a failed RFC 8414 lookup means "no such
// document here" (a 4xx, or a 2xx that is not metadata, such as the HTML a
// single-page app serves for any path) rather than a server in trouble,
// which the OpenID document would not escape either, or an issuer mismatch,
// which must not be papered over.
func documentMissing(err error) bool {
	var oe *Error
	if !errors.As(err, &oe) || oe.Code == CodeIssuerMismatch {
		return false
	}
	s := oe.StatusCode
	switch {
	case s == 408 || s == 429:
		return false
	case s >= 400 && s < 500:
		return true
	case s >= 200 && s < 300:
		return oe.Code == CodeInvalidResponse
	}
	return false
}

// rfc8414URL inserts the well-known suffix between host and path (RFC 8414
// §3.1): https://as.example/tenant → https://as.example/.well-known/oauth-authorization-server/tenant.
func rfc8414URL(issuer string) string {
	u, _ := url.Parse(issuer) // checked by checkIssuer
	path := strings.TrimSuffix(u.EscapedPath(), "/")
	return u.Scheme + "://" + u.Host + "/.well-known/oauth-authorization-server" + path
}

// oidcDiscoveryURL appends the well-known suffix to the issuer (OpenID
// Connect Discovery 1.0 §4.1).
func oidcDiscoveryURL(issuer string) string {
	return strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
}

// checkIssuer accepts what RFC 8414 §2 allows an issuer to be (an http(s)
// URL without query or fragment; plain http is tolerated for test servers
// and internal deployments).
func checkIssuer(issuer string) error {
	if err := checkHTTPURL(issuer); err != nil {
		return err
	}
	u, _ := url.Parse(issuer)
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(issuer, "#") {
		return fmt.Errorf("%q has a query or fragment", issuer)
	}
	return nil
}

// metadataDocument is the wire form. The *_supported lists are lenient:
// a provider that spells one oddly should not lose its token endpoint.
type metadataDocument struct {
	Issuer                                     string      `json:"issuer"`
	AuthorizationEndpoint                      string      `json:"authorization_endpoint"`
	TokenEndpoint                              string      `json:"token_endpoint"`
	IntrospectionEndpoint                      string      `json:"introspection_endpoint"`
	RevocationEndpoint                         string      `json:"revocation_endpoint"`
	JWKSURI                                    string      `json:"jwks_uri"`
	UserinfoEndpoint                           string      `json:"userinfo_endpoint"`
	RegistrationEndpoint                       string      `json:"registration_endpoint"`
	ScopesSupported                            lenientList `json:"scopes_supported"`
	ResponseTypesSupported                     lenientList `json:"response_types_supported"`
	GrantTypesSupported                        lenientList `json:"grant_types_supported"`
	TokenEndpointAuthMethodsSupported          lenientList `json:"token_endpoint_auth_methods_supported"`
	CodeChallengeMethodsSupported              lenientList `json:"code_challenge_methods_supported"`
	IntrospectionEndpointAuthMethodsSupported  lenientList `json:"introspection_endpoint_auth_methods_supported"`
	RevocationEndpointAuthMethodsSupported     lenientList `json:"revocation_endpoint_auth_methods_supported"`
	AuthorizationResponseIssParameterSupported lenientBool `json:"authorization_response_iss_parameter_supported"`
	ClientIDMetadataDocumentSupported          bool        `json:"client_id_metadata_document_supported"`
}

// lenientBool is a JSON boolean; anything else reads as false.
type lenientBool bool

func (b *lenientBool) UnmarshalJSON(data []byte) error {
	var v bool
	if json.Unmarshal(data, &v) == nil {
		*b = lenientBool(v)
	}
	return nil
}

// lenientList is a JSON array of strings; a space-separated string is read
// as one, and anything else as absent.
type lenientList []string

func (l *lenientList) UnmarshalJSON(b []byte) error {
	var list []string
	if err := json.Unmarshal(b, &list); err == nil {
		*l = list
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*l = strings.Fields(s)
		return nil
	}
	*l = nil
	return nil
}

// FetchMetadata fetches one authorization server metadata document from
// docURL with client, without caching, and checks that it names exactly
// issuer (RFC 8414 §3.3). Callers that must try well-known locations of
// their own (the MCP authorization specification adds OpenID Connect path
// insertion) use it; everyone else uses [DiscoveryCache.Get]. Failures are
// [*Error]s: [CodeIssuerMismatch], [CodeInvalidResponse], or the server's
// error status.
func FetchMetadata(ctx context.Context, client *http.Client, docURL, issuer string) (*Metadata, error) {
	if err := checkIssuer(issuer); err != nil {
		return nil, fmt.Errorf("oauth: discovery: issuer: %w", err)
	}
	if client == nil {
		client = &http.Client{Timeout: DefaultHTTPTimeout}
	}
	return (&DiscoveryCache{}).fetchDocument(ctx, client, docURL, issuer)
}

// DocumentMissing reports whether err, from [FetchMetadata], means that no
// metadata document is at that URL (so the next well-known location is
// worth trying), rather than a server in trouble or an issuer mismatch.
func DocumentMissing(err error) bool { return documentMissing(err) }

func (c *DiscoveryCache) fetchDocument(ctx context.Context, client *http.Client, docURL, issuer string) (*Metadata, error) {
	const op = "discovery"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, docURL, nil)
	if err != nil {
		return nil, &Error{Op: op, Code: CodeInvalidResponse, Kind: KindTerminal,
			Description: "building request for " + docURL, Err: err}
	}
	req.Header.Set("Accept", "application/json")
	status, header, body, err := doRequest(client, op, req)
	if err != nil {
		return nil, err
	}
	if status/100 != 2 {
		return nil, ParseErrorResponse(op, status, header, body, c.now())
	}
	invalid := func(format string, args ...any) *Error {
		return &Error{Op: op, StatusCode: status, Code: CodeInvalidResponse, Kind: KindTransient,
			Description: docURL + ": " + fmt.Sprintf(format, args...)}
	}
	var doc metadataDocument
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&doc); err != nil {
		return nil, invalid("not a JSON metadata document (content type %q)", header.Get("Content-Type"))
	}
	if doc.Issuer == "" {
		return nil, invalid("document has no issuer")
	}
	if doc.Issuer != issuer {
		return nil, &Error{Op: op, StatusCode: status, Code: CodeIssuerMismatch, Kind: KindTerminal,
			Description: fmt.Sprintf("%s names issuer %.200q, want %q", docURL, doc.Issuer, issuer)}
	}
	for _, f := range []struct{ name, value string }{
		{"authorization_endpoint", doc.AuthorizationEndpoint},
		{"token_endpoint", doc.TokenEndpoint},
		{"introspection_endpoint", doc.IntrospectionEndpoint},
		{"revocation_endpoint", doc.RevocationEndpoint},
		{"jwks_uri", doc.JWKSURI},
		{"userinfo_endpoint", doc.UserinfoEndpoint},
		{"registration_endpoint", doc.RegistrationEndpoint},
	} {
		if f.value == "" {
			continue
		}
		if err := checkHTTPURL(f.value); err != nil {
			return nil, invalid("%s: %v", f.name, err)
		}
	}
	return &Metadata{
		Issuer:                doc.Issuer,
		AuthorizationEndpoint: doc.AuthorizationEndpoint,
		TokenEndpoint:         doc.TokenEndpoint,
		IntrospectionEndpoint: doc.IntrospectionEndpoint,
		RevocationEndpoint:    doc.RevocationEndpoint,
		JWKSURI:               doc.JWKSURI,
		UserinfoEndpoint:      doc.UserinfoEndpoint,
		RegistrationEndpoint:  doc.RegistrationEndpoint,

		ScopesSupported:                           doc.ScopesSupported,
		ResponseTypesSupported:                    doc.ResponseTypesSupported,
		GrantTypesSupported:                       doc.GrantTypesSupported,
		TokenEndpointAuthMethodsSupported:         doc.TokenEndpointAuthMethodsSupported,
		CodeChallengeMethodsSupported:             doc.CodeChallengeMethodsSupported,
		IntrospectionEndpointAuthMethodsSupported: doc.IntrospectionEndpointAuthMethodsSupported,
		RevocationEndpointAuthMethodsSupported:    doc.RevocationEndpointAuthMethodsSupported,

		AuthorizationResponseIssParameterSupported: bool(doc.AuthorizationResponseIssParameterSupported),
	}, nil
}
