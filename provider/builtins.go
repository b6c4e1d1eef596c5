package provider

import "time"

const day = 24 * time.Hour

// Builtins returns the built-in provider profiles by name. Every call builds
// new values, so callers may change what they get.
//
// Each value comes from the provider's documentation, cited beside it. Where
// the documentation gives no value, the field is left zero and the comment
// says so. Built-ins carry no client id or secret; a configuration supplies
// them.
func Builtins() map[string]Profile {
	return map[string]Profile{
		// GitHub App user access tokens (user-to-server), with token
		// expiration enabled. docs.github.com: "Refreshing user access tokens".
		"github": {
			Name:         "github",
			DisplayName:  "GitHub",
			TokenURL:     "https://github.com/login/oauth/access_token",
			AuthorizeURL: "https://github.com/login/oauth/authorize",
			APIBaseURL:   "https://api.github.com",
			// Revocation is DELETE /applications/{client_id}/token, not
			// RFC 7009, and GitHub is not an OpenID provider: no issuer.
			AuthStyle: AuthStyleParams, // client_id and client_secret go in the form body.
			// GitHub Apps take no scopes; permissions are set on the app.
			RefreshOn: []int{401},
			// expires_in (8 h) and refresh_token_expires_in (6 months) are in
			// every response. Failed refreshes come back as HTTP 200 with an
			// "error" field.
			Rotation: RotationRotate, // The refresh token is single use: each refresh returns a new one.
		},

		// developers.google.com/identity/protocols/oauth2 and
		// .../oauth2/web-server.
		"google": {
			Name:          "google",
			DisplayName:   "Google",
			Issuer:        "https://accounts.google.com",
			TokenURL:      "https://oauth2.googleapis.com/token",
			AuthorizeURL:  "https://accounts.google.com/o/oauth2/v2/auth",
			RevocationURL: "https://oauth2.googleapis.com/revoke",
			APIBaseURL:    "https://www.googleapis.com",
			// No RFC 7662 endpoint (tokeninfo is Google's own).
			AuthStyle: AuthStyleParams, // Documented requests send the client secret in the body.
			// access_type=offline is what yields a refresh token; prompt=consent
			// makes Google send one again on a repeat consent.
			AuthParams: map[string]string{"access_type": "offline", "prompt": "consent"},
			RefreshOn:  []int{401},
			Rotation:   RotationNone, // The refresh token stays the same.
			// "The user has not used the refresh token for six months."
			// (7 days for apps in "Testing" status: override refresh_idle_timeout.)
			RefreshIdleTimeout: 4380 * time.Hour,
		},

		// Microsoft identity platform (Entra ID) v2 endpoints, multi-tenant
		// "common" authority. learn.microsoft.com: "Refresh tokens in the
		// Microsoft identity platform".
		"microsoft": {
			Name:         "microsoft",
			DisplayName:  "Microsoft",
			TokenURL:     "https://login.microsoftonline.com/common/oauth2/v2.0/token",
			AuthorizeURL: "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
			APIBaseURL:   "https://graph.microsoft.com",
			// No issuer: the "common" authority's issuer is per tenant
			// (https://login.microsoftonline.com/{tenantid}/v2.0). No RFC 7009
			// or RFC 7662 endpoint.
			AuthStyle: AuthStyleParams,
			Scopes:    []string{"offline_access"}, // Required for a refresh token.
			RefreshOn: []int{401},
			// Each refresh returns a new refresh token; the old one is not
			// revoked.
			Rotation: RotationRotateKeepOld,
			// 90 days, not in the response (24 hours for single-page apps:
			// override refresh_token_lifetime).
			RefreshTokenLifetime: 90 * day,
		},

		// help.salesforce.com: "OAuth 2.0 Refresh Token Flow", "Revoke
		// OAuth Tokens", "OAuth 2.0 Token Introspection Endpoint".
		"salesforce": {
			Name:             "salesforce",
			DisplayName:      "Salesforce",
			TokenURL:         "https://login.salesforce.com/services/oauth2/token", // Sandboxes: test.salesforce.com.
			AuthorizeURL:     "https://login.salesforce.com/services/oauth2/authorize",
			IntrospectionURL: "https://login.salesforce.com/services/oauth2/introspect",
			RevocationURL:    "https://login.salesforce.com/services/oauth2/revoke",
			// No APIBaseURL: the API lives on each org's own host, returned as
			// instance_url in the token response; set api_base_url per org.
			AuthStyle: AuthStyleParams,
			Scopes:    []string{"refresh_token"}, // Required for a refresh token (alias offline_access).
			// Responses carry issued_at but no expires_in; the access token
			// lives as long as the org's session timeout, 2 hours by default.
			DefaultExpiresIn: 2 * time.Hour,
			RefreshOn:        []int{401},
			// Rotation is off unless enabled on the connected app. Two
			// simultaneous refreshes with one token are refused ("token request
			// is already being processed"). Refresh token lifetime is a
			// per-app policy ("valid until revoked" by default): left zero.
			Rotation: RotationNone,
		},

		// Slack apps with token rotation enabled. docs.slack.dev: "Using
		// token rotation", "oauth.v2.access".
		"slack": {
			Name:         "slack",
			DisplayName:  "Slack",
			TokenURL:     "https://slack.com/api/oauth.v2.access",
			AuthorizeURL: "https://slack.com/oauth/v2/authorize",
			APIBaseURL:   "https://slack.com/api",
			// auth.revoke takes the token as a bearer credential, not RFC 7009.
			// Slack asks for HTTP Basic over form parameters.
			AuthStyle: AuthStyleHeader,
			// Errors come back as HTTP 200 {"ok":false,"error":"..."}, API
			// calls included ("token_expired"), so status-based refresh
			// rarely fires and the refresh window does the work.
			RefreshOn: []int{401},
			// Access tokens last 12 hours (expires_in is sent); each refresh
			// revokes the refresh token used. Without rotation enabled, tokens
			// do not expire and come with no refresh token, which is why there
			// is no DefaultExpiresIn. Refresh token lifetime: not documented.
			Rotation: RotationRotate,
		},

		// developer.atlassian.com: "OAuth 2.0 (3LO) apps", and the
		// "Deprecating persistent refresh tokens" announcement.
		"atlassian": {
			Name:         "atlassian",
			DisplayName:  "Atlassian",
			TokenURL:     "https://auth.atlassian.com/oauth/token",
			AuthorizeURL: "https://auth.atlassian.com/authorize",
			APIBaseURL:   "https://api.atlassian.com",
			// No RFC 7009 or RFC 7662 endpoint is documented.
			AuthStyle:  AuthStyleParams,            // client_id and client_secret go in the request body.
			Scopes:     []string{"offline_access"}, // Required for a refresh token.
			AuthParams: map[string]string{"audience": "api.atlassian.com", "prompt": "consent"},
			RefreshOn:  []int{401},
			// Rotating refresh tokens; reuse outside a 10-minute leeway
			// invalidates every token of the grant.
			Rotation:      RotationRotateGrace,
			RotationGrace: 10 * time.Minute,
			// 90 days of inactivity, reset by each refresh. The 365-day
			// absolute expiry is not reset by rotation, so it cannot be
			// expressed as a per-token lifetime: left zero.
			RefreshIdleTimeout: 90 * day,
		},

		// developers.hubspot.com: "Managing OAuth tokens".
		"hubspot": {
			Name:         "hubspot",
			DisplayName:  "HubSpot",
			TokenURL:     "https://api.hubapi.com/oauth/v1/token",
			AuthorizeURL: "https://app.hubspot.com/oauth/authorize",
			APIBaseURL:   "https://api.hubapi.com",
			// Refresh tokens are deleted with DELETE /oauth/v1/refresh-tokens/{token},
			// not RFC 7009.
			AuthStyle: AuthStyleParams, // Form body parameters.
			RefreshOn: []int{401},
			// Access tokens last 30 minutes (expires_in is sent). The refresh
			// token does not change and does not expire while the app is
			// installed.
			Rotation: RotationNone,
		},

		// developer.xero.com: "OAuth 2.0 auth flow" and the OAuth 2.0 FAQ.
		"xero": {
			Name:          "xero",
			DisplayName:   "Xero",
			Issuer:        "https://identity.xero.com",
			TokenURL:      "https://identity.xero.com/connect/token",
			AuthorizeURL:  "https://login.xero.com/identity/connect/authorize",
			RevocationURL: "https://identity.xero.com/connect/revocation",
			APIBaseURL:    "https://api.xero.com",
			AuthStyle:     AuthStyleHeader,            // Documented as "Authorization: Basic".
			Scopes:        []string{"offline_access"}, // Required for a refresh token.
			RefreshOn:     []int{401},
			// Access tokens last 30 minutes (expires_in is sent). Each refresh
			// returns a new refresh token; the old one may be retried for 30
			// minutes.
			Rotation:      RotationRotateGrace,
			RotationGrace: 30 * time.Minute,
			// Unused refresh tokens expire: Xero announced 30 days; its FAQ now
			// says 60. The shorter keeps a margin.
			RefreshIdleTimeout: 30 * day,
		},

		// Zendesk: one host per account, so the URLs are templates filled
		// from vars.subdomain. developer.zendesk.com: "Working with OAuth
		// refresh tokens"; support.zendesk.com: token expiration TTLs.
		"zendesk": {
			Name:         "zendesk",
			DisplayName:  "Zendesk",
			TokenURL:     "https://{subdomain}.zendesk.com/oauth/tokens",
			AuthorizeURL: "https://{subdomain}.zendesk.com/oauth/authorizations/new",
			APIBaseURL:   "https://{subdomain}.zendesk.com/api/v2",
			// Tokens are revoked through the OAuth Tokens API, not RFC 7009.
			AuthStyle: AuthStyleParams, // client_id and client_secret go in the request body.
			RefreshOn: []int{401},
			// A refresh returns a new refresh token and deletes the old pair.
			Rotation: RotationRotate,
			// Default refresh token TTL: 30 days (7 to 90 configurable). The
			// access token default (30 minutes) is not used as
			// DefaultExpiresIn: tokens of clients without enforced expiry
			// carry no expires_in and never expire.
			RefreshTokenLifetime: 30 * day,
		},

		// QuickBooks Online (Intuit). developer.intuit.com: "OAuth 2.0"
		// and "Refresh token policy".
		"quickbooks": {
			Name:          "quickbooks",
			DisplayName:   "QuickBooks Online",
			TokenURL:      "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer",
			AuthorizeURL:  "https://appcenter.intuit.com/connect/oauth2",
			RevocationURL: "https://developer.api.intuit.com/v2/oauth2/tokens/revoke",
			APIBaseURL:    "https://quickbooks.api.intuit.com", // Sandbox: sandbox-quickbooks.api.intuit.com.
			AuthStyle:     AuthStyleHeader,                     // Documented as "Authorization: Basic".
			RefreshOn:     []int{401},
			// Access tokens last 1 hour (expires_in is sent), and
			// x_refresh_token_expires_in is sent too. The refresh token value
			// may change on any refresh (at least every 24 hours); always keep
			// the latest.
			Rotation: RotationRotate,
			// A refresh token unused for 100 days expires.
			RefreshIdleTimeout: 100 * day,
		},
	}
}
