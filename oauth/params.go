package oauth

import (
	"context"
	"fmt"
	"net/url"
)

// reservedTokenParams are the token request parameters an [Endpoint] sets
// itself for its grants and client authentication; extra parameters, per
// call (RefreshWithParams) or per endpoint (Config.TokenParams), may not
// override them.
var reservedTokenParams = []string{"grant_type", "code", "redirect_uri", "code_verifier", "refresh_token", "client_id", "client_secret"}

// CheckRefreshParams reports a parameter that [Endpoint.RefreshWithParams]
// would refuse: one the token request sets itself.
func CheckRefreshParams(params url.Values) error {
	for _, k := range reservedTokenParams {
		if _, ok := params[k]; ok {
			return fmt.Errorf("oauth: refresh parameter %q is set by the token request itself", k)
		}
	}
	return nil
}

// RefreshWithParams is [Endpoint.Refresh] with extra form parameters on the
// refresh request, such as resource (RFC 8707 §2.2: an MCP server or an API
// that audience-restricts its tokens) or scope (RFC 6749 §6: Microsoft Entra
// asks for it on every refresh). Parameters the request sets itself
// (grant_type, refresh_token, client_id, client_secret) are refused.
func (e *Endpoint) RefreshWithParams(ctx context.Context, refreshToken string, params url.Values) (*Token, error) {
	if err := CheckRefreshParams(params); err != nil {
		return nil, err
	}
	return e.refresh(ctx, refreshToken, params)
}

func addParams(form, params url.Values) {
	for k, vs := range params {
		for _, v := range vs {
			form.Add(k, v)
		}
	}
}
