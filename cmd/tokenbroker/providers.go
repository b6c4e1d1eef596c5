package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/provider"
)

// providerCheckTimeout bounds the discovery request of one provider.
const providerCheckTimeout = 15 * time.Second

// providerReport is one provider's line of `providers list` and `check`.
type providerReport struct {
	Name         string   `json:"name"`
	Issuer       string   `json:"issuer,omitempty"`
	TokenURL     string   `json:"token_url,omitempty"`
	AuthorizeURL string   `json:"authorize_url,omitempty"`
	APIBaseURL   string   `json:"api_base_url,omitempty"`
	Scopes       []string `json:"scopes"`
	// Status is "ok" or "failed" (check), "ok" or "invalid" (list).
	Status string `json:"status"`
	// Detail says what is wrong, or what the check found; never a secret.
	Detail string `json:"detail,omitempty"`
}

// loadProviders loads the configuration and builds each provider on its
// own, so that one broken entry (a missing secret, say) is reported
// against its name while the others still load. The error is for the rest
// of the configuration.
func loadProviders(cfgPath string) ([]providerReport, []provider.Profile, error) {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, nil, err
	}
	rest := *cfg
	rest.Providers = nil
	cfgErr := rest.Validate()

	reports := make([]providerReport, 0, len(cfg.Providers))
	profiles := make([]provider.Profile, 0, len(cfg.Providers))
	for i, pc := range cfg.Providers {
		r := providerReport{Name: pc.Name, Status: "ok"}
		if r.Name == "" {
			r.Name = fmt.Sprintf("providers[%d]", i)
		}
		p, err := cfg.ProviderProfile(i)
		p = p.WithDefaults()
		if err != nil {
			// Messages name fields, variables and paths, never secret values.
			r.Status, r.Detail = "invalid", strings.ReplaceAll(err.Error(), "\n", "; ")
		} else {
			r.Issuer, r.TokenURL, r.AuthorizeURL, r.APIBaseURL = p.Issuer, p.TokenURL, p.AuthorizeURL, p.APIBaseURL
			r.Scopes = p.Scopes
		}
		if r.Scopes == nil {
			r.Scopes = []string{}
		}
		reports = append(reports, r)
		profiles = append(profiles, p)
	}
	return reports, profiles, cfgErr
}

func init() { registerCommand(newProvidersCmd) }

func newProvidersCmd(c *cli) *cobra.Command {
	sub := func(name, short string) *cobra.Command {
		return &cobra.Command{
			Use:   name,
			Short: short,
			Args:  exactArgs(0, ""),
			RunE:  func(cmd *cobra.Command, args []string) error { return providersRun(cmd.Context(), c, name) },
		}
	}
	return group("providers", "the configured providers",
		sub("list", "list the configured providers and their endpoints"),
		sub("check", "validate the providers and run discovery against each issuer"))
}

func providersRun(ctx context.Context, c *cli, sub string) error {
	reports, profiles, cfgErr := loadProviders(c.configPath)
	if reports == nil && cfgErr != nil {
		return cfgErr
	}
	failed := 0
	if sub == "check" {
		client := &http.Client{Timeout: providerCheckTimeout}
		for i := range reports {
			if reports[i].Status != "ok" {
				reports[i].Status = "failed"
				failed++
				continue
			}
			if err := checkProvider(ctx, client, &reports[i], profiles[i]); err != nil {
				reports[i].Status, reports[i].Detail = "failed", err.Error()
				failed++
			}
		}
	}
	if c.asJSON() {
		out := map[string]any{"providers": reports}
		if cfgErr != nil {
			out["config_error"] = cfgErr.Error()
		}
		if err := writeValue(c.stdout, out); err != nil {
			return err
		}
	} else if err := printProviders(c.stdout, reports, sub == "check"); err != nil {
		return err
	}
	switch {
	case cfgErr != nil:
		return fmt.Errorf("configuration: %w", cfgErr)
	case failed > 0:
		return fmt.Errorf("%d of %d providers failed the check", failed, len(reports))
	}
	return nil
}

func printProviders(w io.Writer, reports []providerReport, check bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if check {
		fmt.Fprintln(tw, "NAME\tSTATUS\tDETAIL")
		for _, r := range reports {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Name, r.Status, orDash(r.Detail))
		}
		return tw.Flush()
	}
	fmt.Fprintln(tw, "NAME\tSTATUS\tISSUER\tTOKEN_URL\tAPI_BASE_URL\tSCOPES")
	for _, r := range reports {
		if r.Status != "ok" {
			fmt.Fprintf(tw, "%s\t%s\t%s\t\t\t\n", r.Name, r.Status, r.Detail)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.Status, orDash(r.Issuer), orDash(r.TokenURL),
			orDash(r.APIBaseURL), orDash(strings.Join(r.Scopes, " ")))
	}
	return tw.Flush()
}

// checkProvider runs discovery (RFC 8414, then OpenID Connect Discovery)
// against a provider's issuer and checks that the endpoints tokenbroker
// needs are known, configured or discovered. It fills in the discovered
// URLs and, on success, a summary in Detail.
func checkProvider(ctx context.Context, client *http.Client, r *providerReport, p provider.Profile) error {
	token, authorize := p.TokenURL, p.AuthorizeURL
	detail := "configured endpoints; no issuer to discover"
	if p.Issuer != "" {
		cache := oauth.NewDiscoveryCache(time.Minute)
		dctx, cancel := context.WithTimeout(ctx, providerCheckTimeout)
		md, err := cache.Get(dctx, client, p.Issuer)
		cancel()
		if err != nil {
			return fmt.Errorf("discovery at %s: %w", p.Issuer, err)
		}
		if token == "" {
			token = md.TokenEndpoint
		}
		if authorize == "" {
			authorize = md.AuthorizationEndpoint
		}
		detail = "discovery ok"
	}
	if token == "" {
		return errors.New("no token endpoint configured or discovered")
	}
	r.TokenURL, r.AuthorizeURL = token, authorize
	if authorize == "" {
		detail += "; no authorization endpoint: connect links will not work"
	}
	r.Detail = detail
	return nil
}
