package provider

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Client authentication styles at the token endpoint (RFC 6749 §2.3.1).
const (
	// AuthStyleAuto tries HTTP Basic first and falls back to form parameters
	// once, remembering what worked.
	AuthStyleAuto = "auto"
	// AuthStyleHeader sends client_id and client_secret with HTTP Basic
	// (client_secret_basic).
	AuthStyleHeader = "header"
	// AuthStyleParams sends them as form parameters (client_secret_post).
	AuthStyleParams = "params"
)

// Refresh token rotation behaviours. See docs/provider-quirks.md, "Rotation".
const (
	// RotationNone: the refresh token is reused until it dies.
	RotationNone = "none"
	// RotationRotate: every refresh returns a new refresh token and revokes
	// the old one at once. Some providers revoke the whole grant when an old
	// one is replayed.
	RotationRotate = "rotate"
	// RotationRotateGrace: as RotationRotate, but the old token keeps working
	// for [Profile.RotationGrace] after use.
	RotationRotateGrace = "rotate_grace"
	// RotationRotateKeepOld: a new refresh token comes back, but the old one
	// is not revoked.
	RotationRotateKeepOld = "rotate_keep_old"
)

// Defaults applied by [Profile.WithDefaults].
const (
	DefaultRefreshWindow = 5 * time.Minute
	DefaultAuthStyle     = AuthStyleAuto
	// DefaultRotation assumes the worst: a refresh token is never sent twice.
	DefaultRotation = RotationRotate
)

// DefaultRefreshOn is the refresh_on default: 401 is the RFC 6750 §3.1
// answer to an invalid or expired access token.
func DefaultRefreshOn() []int { return []int{401} }

// Profile describes one OAuth provider: its endpoints, client credentials
// and how its tokens behave. The zero value of a defaulted field means "use
// the default" (see [Profile.WithDefaults]); other zero durations mean
// "unknown" or "none".
//
// Profile's String, GoString and LogValue methods never print ClientSecret.
type Profile struct {
	// Name identifies the provider in the API (/v1/connect/{name}) and in
	// connection rows: lower-case letters, digits, '-' and '_'.
	Name        string `yaml:"name"`
	DisplayName string `yaml:"display_name,omitempty"`

	// Issuer is the authorization server's issuer identifier, used for
	// discovery (RFC 8414, OpenID Connect Discovery) when TokenURL is empty.
	Issuer           string `yaml:"issuer,omitempty"`
	TokenURL         string `yaml:"token_url,omitempty"`
	AuthorizeURL     string `yaml:"authorize_url,omitempty"`
	IntrospectionURL string `yaml:"introspection_url,omitempty"` // RFC 7662
	RevocationURL    string `yaml:"revocation_url,omitempty"`    // RFC 7009
	// APIBaseURL is where the proxy sends API calls.
	APIBaseURL string `yaml:"api_base_url,omitempty"`

	ClientID string `yaml:"client_id,omitempty"`
	// ClientSecret is filled by [Profile.ResolveSecret] from ClientSecretEnv
	// or ClientSecretFile; it never comes from a configuration file.
	ClientSecret     string `yaml:"-"`
	ClientSecretEnv  string `yaml:"client_secret_env,omitempty"`
	ClientSecretFile string `yaml:"client_secret_file,omitempty"`
	// AuthStyle is AuthStyleAuto, AuthStyleHeader or AuthStyleParams.
	AuthStyle string `yaml:"auth_style,omitempty"`

	Scopes []string `yaml:"scopes,omitempty"`
	// AuthParams are extra authorization request parameters
	// (Google: access_type=offline, prompt=consent).
	AuthParams map[string]string `yaml:"auth_params,omitempty"`

	// RefreshWindow: refresh an access token this long before it expires.
	RefreshWindow time.Duration `yaml:"refresh_window,omitempty"`
	// RefreshOn lists the API response statuses that mean the access token
	// is stale: refresh and retry once. nil means [DefaultRefreshOn]; an
	// empty, non-nil slice means never.
	RefreshOn []int `yaml:"refresh_on,omitempty"`
	// RefreshOnInvalidToken narrows refresh_on's 401 to what RFC 6750
	// §3.1 says a stale token gets: a 401 whose WWW-Authenticate challenge
	// says error="invalid_token". Other 401s, and a 403 insufficient_scope
	// (which a refresh cannot cure), go back to the caller untouched. MCP
	// servers are always treated this way (docs/mcp.md).
	RefreshOnInvalidToken bool `yaml:"refresh_on_invalid_token,omitempty"`
	// DefaultExpiresIn is the access token lifetime assumed when a token
	// response carries no expires_in. Zero: the lifetime stays unknown.
	DefaultExpiresIn time.Duration `yaml:"default_expires_in,omitempty"`
	// RefreshTokenLifetime is the refresh token lifetime assumed when the
	// response does not state one. Zero: unknown or unlimited.
	RefreshTokenLifetime time.Duration `yaml:"refresh_token_lifetime,omitempty"`
	// RefreshIdleTimeout: the refresh token dies when unused this long, so
	// the scheduler must refresh idle connections before then. Zero: none.
	RefreshIdleTimeout time.Duration `yaml:"refresh_idle_timeout,omitempty"`
	// Rotation is one of the Rotation* constants.
	Rotation string `yaml:"rotation,omitempty"`
	// RotationGrace is how long a used refresh token keeps working under
	// RotationRotateGrace. Zero: not known.
	RotationGrace time.Duration `yaml:"rotation_grace,omitempty"`
	// BadRequestTransient treats an HTTP 400 answer to a refresh as
	// transient (retried after a cooldown). By default it is terminal: the
	// same request can only fail the same way, and some servers (Dex) answer
	// a spent or expired refresh token with 400 invalid_request rather than
	// invalid_grant. See docs/architecture.md.
	BadRequestTransient bool `yaml:"bad_request_transient,omitempty"`

	// TokenRateLimit caps token endpoint requests per second to this
	// provider; zero means unlimited. TokenRateBurst is the bucket size.
	TokenRateLimit float64 `yaml:"token_rate_limit,omitempty"`
	TokenRateBurst int     `yaml:"token_rate_burst,omitempty"`
}

// FieldError is a problem with one field of one profile. Its message names
// the field as a configuration path: "providers[acme].token_url: …".
type FieldError struct {
	Provider string // the profile's Name
	Field    string // "token_url", "refresh_on[1]", "auth_params.prompt"
	Problem  string
	Err      error // underlying cause, if any
}

func (e *FieldError) Error() string {
	return "providers[" + e.Provider + "]." + e.Field + ": " + e.Problem
}

// Unwrap returns the underlying cause.
func (e *FieldError) Unwrap() error { return e.Err }

// WithDefaults returns a copy of p with defaults filled in: AuthStyle,
// Rotation, RefreshWindow, RefreshOn (when nil), DisplayName (the Name) and
// TokenRateBurst (1 when a rate limit is set).
func (p Profile) WithDefaults() Profile {
	p = p.Clone()
	if p.DisplayName == "" {
		p.DisplayName = p.Name
	}
	if p.AuthStyle == "" {
		p.AuthStyle = DefaultAuthStyle
	}
	if p.Rotation == "" {
		p.Rotation = DefaultRotation
	}
	if p.RefreshWindow == 0 {
		p.RefreshWindow = DefaultRefreshWindow
	}
	if p.RefreshOn == nil {
		p.RefreshOn = DefaultRefreshOn()
	}
	if p.TokenRateLimit > 0 && p.TokenRateBurst == 0 {
		p.TokenRateBurst = 1
	}
	return p
}

// Clone returns a deep copy of p: changing its slices or maps does not change
// p's.
func (p Profile) Clone() Profile {
	p.Scopes = slices.Clone(p.Scopes)
	p.RefreshOn = slices.Clone(p.RefreshOn)
	p.AuthParams = maps.Clone(p.AuthParams)
	return p
}

var (
	nameRE        = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
	placeholderRE = regexp.MustCompile(`\{([^{}]+)\}`)
	varNameRE     = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)
	varValueRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
)

// Parameters the authorization flow sets itself (RFC 6749 §4.1.1, RFC 7636
// §4.3); letting auth_params override them would break the flow or its
// protections.
var reservedAuthParams = []string{
	"response_type", "client_id", "redirect_uri", "scope", "state",
	"code_challenge", "code_challenge_method",
}

// Validate checks p and returns every problem found, joined, each a
// [*FieldError] naming its field. Empty defaulted fields (see
// [Profile.WithDefaults]) are accepted. A profile needs a client id and
// either a token URL or an issuer to discover one from. URLs must be
// absolute https URLs; plain http is accepted for loopback hosts only, for
// tests and local development.
func (p Profile) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Provider: p.Name, Field: field, Problem: fmt.Sprintf(format, args...)})
	}

	if p.Name == "" {
		bad("name", "required")
	} else if !nameRE.MatchString(p.Name) {
		bad("name", "must be 1 to 64 of a-z, 0-9, '-' and '_', starting with a letter or digit")
	}
	if p.ClientID == "" {
		bad("client_id", "required")
	}
	if p.ClientSecretEnv != "" && p.ClientSecretFile != "" {
		bad("client_secret_file", "set only one of client_secret_env and client_secret_file")
	}

	if p.TokenURL == "" && p.Issuer == "" {
		bad("token_url", "required (or set issuer to discover it)")
	}
	unresolved := map[string]bool{} // report each missing var once
	for _, u := range []struct {
		field, value string
		query        bool // a query component is allowed
	}{
		{"issuer", p.Issuer, false}, // RFC 8414 §2: no query or fragment
		{"token_url", p.TokenURL, true},
		{"authorize_url", p.AuthorizeURL, true},
		{"introspection_url", p.IntrospectionURL, true},
		{"revocation_url", p.RevocationURL, true},
		{"api_base_url", p.APIBaseURL, false},
	} {
		if u.value == "" {
			continue
		}
		if names := placeholders(u.value); len(names) > 0 {
			if !unresolved[names[0]] {
				unresolved[names[0]] = true
				bad(u.field, "has unresolved placeholder {%s}: set vars.%s", names[0], names[0])
			}
			continue
		}
		if problem := checkURL(u.value, u.query); problem != "" {
			bad(u.field, "%s", problem)
		}
	}

	switch p.AuthStyle {
	case "", AuthStyleAuto, AuthStyleHeader, AuthStyleParams:
	default:
		bad("auth_style", "%q is not one of auto, header, params", p.AuthStyle)
	}

	for i, s := range p.Scopes {
		if !validScope(s) {
			bad(fmt.Sprintf("scopes[%d]", i), "%q is not a valid scope token (RFC 6749 §3.3: no spaces, quotes or backslashes)", s)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(p.AuthParams)) {
		switch {
		case k == "":
			bad("auth_params", "empty parameter name")
		case slices.Contains(reservedAuthParams, k):
			bad("auth_params."+k, "is set by the authorization flow and cannot be configured")
		}
	}

	for i, status := range p.RefreshOn {
		if status < 100 || status > 599 {
			bad(fmt.Sprintf("refresh_on[%d]", i), "%d is not an HTTP status (100-599)", status)
		}
	}
	for _, d := range []struct {
		field string
		value time.Duration
	}{
		{"refresh_window", p.RefreshWindow},
		{"default_expires_in", p.DefaultExpiresIn},
		{"refresh_token_lifetime", p.RefreshTokenLifetime},
		{"refresh_idle_timeout", p.RefreshIdleTimeout},
		{"rotation_grace", p.RotationGrace},
	} {
		if d.value < 0 {
			bad(d.field, "%s is negative", d.value)
		}
	}
	window := p.RefreshWindow
	if window == 0 {
		window = DefaultRefreshWindow
	}
	if p.DefaultExpiresIn > 0 && window >= p.DefaultExpiresIn {
		bad("refresh_window", "%s is not shorter than default_expires_in (%s): every token would be refreshed on every use", window, p.DefaultExpiresIn)
	}

	switch p.Rotation {
	case "", RotationNone, RotationRotate, RotationRotateGrace, RotationRotateKeepOld:
	default:
		bad("rotation", "%q is not one of none, rotate, rotate_grace, rotate_keep_old", p.Rotation)
	}
	if p.RotationGrace > 0 && p.Rotation != RotationRotateGrace {
		bad("rotation_grace", "only applies with rotation: rotate_grace")
	}

	if math.IsNaN(p.TokenRateLimit) || math.IsInf(p.TokenRateLimit, 0) || p.TokenRateLimit < 0 {
		bad("token_rate_limit", "must be a non-negative number of requests per second")
	}
	if p.TokenRateBurst < 0 {
		bad("token_rate_burst", "must not be negative")
	}
	return errors.Join(errs...)
}

// checkURL returns what is wrong with an endpoint URL, or "". It never
// repeats the URL: a mistaken paste may hold credentials.
func checkURL(raw string, allowQuery bool) string {
	if strings.ContainsAny(raw, "{}") {
		return "has an empty or unbalanced {placeholder}"
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Opaque != "" {
		return "must be an absolute https URL"
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && isLoopback(u.Hostname()):
	case u.Scheme == "http":
		return "must be an absolute https URL (http is allowed for loopback hosts only)"
	default:
		return "must be an absolute https URL"
	}
	if u.User != nil {
		return "must not contain credentials"
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return "must not have a fragment (RFC 6749 §3.1)"
	}
	if !allowQuery && (u.RawQuery != "" || u.ForceQuery) {
		return "must not have a query"
	}
	return ""
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// validScope reports whether s is an RFC 6749 §3.3 scope-token:
// 1*( %x21 / %x23-5B / %x5D-7E ).
func validScope(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// TemplateVars returns the names of the {placeholders} left in p's URLs,
// sorted: the vars a configuration must set (Zendesk: "subdomain").
func (p Profile) TemplateVars() []string {
	var names []string
	for _, f := range p.urlFields() {
		names = append(names, placeholders(*f)...)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// Expand returns p with each {name} placeholder in its URLs replaced by
// vars[name]. Values must be 1 or more of A-Z a-z 0-9 . _ - (starting with a
// letter or digit) so a value cannot move a URL to another host or path; a
// var that no URL uses is an error too, as it is most likely a typo.
// Placeholders without a var are left for [Profile.Validate] to report.
func (p Profile) Expand(vars map[string]string) (Profile, error) {
	if len(vars) == 0 {
		return p, nil
	}
	used := p.TemplateVars()
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(vars)) {
		field := "vars." + name
		switch v := vars[name]; {
		case !varNameRE.MatchString(name):
			errs = append(errs, &FieldError{Provider: p.Name, Field: field, Problem: "invalid variable name"})
		case !slices.Contains(used, name):
			errs = append(errs, &FieldError{Provider: p.Name, Field: field, Problem: "is not used by any URL of this provider"})
		case !varValueRE.MatchString(v):
			errs = append(errs, &FieldError{Provider: p.Name, Field: field, Problem: "must be letters, digits, '.', '_' or '-', starting with a letter or digit"})
		}
	}
	if len(errs) > 0 {
		return p, errors.Join(errs...)
	}
	p = p.Clone()
	for _, f := range p.urlFields() {
		*f = placeholderRE.ReplaceAllStringFunc(*f, func(m string) string {
			if v, ok := vars[m[1:len(m)-1]]; ok {
				return v
			}
			return m
		})
	}
	return p, nil
}

func (p *Profile) urlFields() []*string {
	return []*string{&p.Issuer, &p.TokenURL, &p.AuthorizeURL, &p.IntrospectionURL, &p.RevocationURL, &p.APIBaseURL}
}

func placeholders(s string) []string {
	var names []string
	for _, m := range placeholderRE.FindAllStringSubmatch(s, -1) {
		names = append(names, m[1])
	}
	return names
}

// String describes p without its client secret.
func (p Profile) String() string {
	return "provider.Profile{name=" + p.Name + " token_url=" + p.TokenURL +
		" client_id=" + p.ClientID + " client_secret=" + redact(p.ClientSecret) + "}"
}

// GoString keeps %#v from printing the client secret.
func (p Profile) GoString() string { return p.String() }

// LogValue implements [slog.LogValuer] without the client secret.
func (p Profile) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("name", p.Name),
		slog.String("token_url", p.TokenURL),
		slog.String("client_id", p.ClientID),
		slog.String("client_secret", redact(p.ClientSecret)),
		slog.String("auth_style", p.AuthStyle),
		slog.String("rotation", p.Rotation),
	)
}

func redact(secret string) string {
	if secret == "" {
		return "<none>"
	}
	return "<redacted>"
}
