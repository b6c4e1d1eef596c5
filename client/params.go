package client

import (
	"context"
	"fmt"
	"net/url"

	"github.com/tokenbroker/tokenbroker/oauth"
)

// ParamRefresher is a [Refresher] that can put extra form parameters on a
// refresh request ([Config.RefreshParams]). [*oauth.Endpoint] satisfies it.
type ParamRefresher interface {
	Refresher
	RefreshWithParams(ctx context.Context, refreshToken string, params url.Values) (*oauth.Token, error)
}

var _ ParamRefresher = (*oauth.Endpoint)(nil)

// refreshParams checks the parameters of a [Config] against its Refresher
// and returns a copy the source owns.
func refreshParams(r Refresher, params url.Values) (url.Values, error) {
	if len(params) == 0 {
		return nil, nil
	}
	if _, ok := r.(ParamRefresher); !ok {
		return nil, fmt.Errorf("client: Config.RefreshParams needs a Refresher with a RefreshWithParams method (a ParamRefresher); %T has none", r)
	}
	if err := oauth.CheckRefreshParams(params); err != nil {
		return nil, fmt.Errorf("client: Config.RefreshParams: %w", err)
	}
	c := make(url.Values, len(params))
	for k, vs := range params {
		c[k] = append([]string(nil), vs...)
	}
	return c, nil
}

func (s *TokenSource) callRefresher(ctx context.Context, refreshToken string) (*oauth.Token, error) {
	if s.params != nil {
		return s.refresher.(ParamRefresher).RefreshWithParams(ctx, refreshToken, s.params)
	}
	return s.refresher.Refresh(ctx, refreshToken)
}
