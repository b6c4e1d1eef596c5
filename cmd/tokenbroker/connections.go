package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Environment of the client commands. The API key is read only from the
// environment, never from a flag, so it stays out of shell history and ps.
const (
	envURL          = "TOKENBROKER_URL"
	envAPIKey       = "TOKENBROKER_API_KEY"
	envAccessToken  = "TOKENBROKER_ACCESS_TOKEN"
	envRefreshToken = "TOKENBROKER_REFRESH_TOKEN"
	defaultURL      = "http://127.0.0.1:8080"
)

// apiError is an error answer of the server.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("server answered %d %s", e.Status, e.Code)
	}
	return fmt.Sprintf("%s (%s, HTTP %d)", e.Message, e.Code, e.Status)
}

// exitStatus is the exit status for an error of a command.
func exitStatus(err error) int {
	var ae *apiError
	switch {
	case errors.Is(err, errUsage):
		return exitUsage
	case errors.As(err, &ae) && ae.Code == "not_found":
		return exitNotFound
	case errors.As(err, &ae) && ae.Code == "reauth_required":
		return exitReauth
	}
	return exitFailure
}

// apiClient calls a running tokenbroker's HTTP API.
type apiClient struct {
	base string
	key  string
	http *http.Client
}

func newAPIClient() (*apiClient, error) {
	base := strings.TrimRight(os.Getenv(envURL), "/")
	if base == "" {
		base = defaultURL
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usageErr("%s=%q is not an http(s) URL", envURL, base)
	}
	key := os.Getenv(envAPIKey)
	if key == "" {
		return nil, usageErr("%s is not set; create a key with `tokenbroker apikey create`", envAPIKey)
	}
	return &apiClient{base: base, key: key, http: &http.Client{Timeout: 90 * time.Second}}, nil
}

// do sends a request and decodes a 2xx JSON answer into out (when not nil).
// Error answers become *apiError. raw, when not nil, receives the body.
func (c *apiClient) do(ctx context.Context, method, path string, body any, out any, raw *[]byte) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// The URL is the server's; the key is in a header, not in err.
		return fmt.Errorf("cannot reach tokenbroker at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("reading the answer of %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		_ = json.Unmarshal(data, &e)
		if e.Error.Code == "" {
			e.Error.Code = "http_" + strconv.Itoa(resp.StatusCode)
		}
		return &apiError{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
	}
	if raw != nil {
		*raw = data
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("the answer of %s %s is not the expected JSON: %w", method, path, err)
		}
	}
	return nil
}

// connection is the API's view of a connection, as the CLI shows it.
type connection struct {
	ID              string     `json:"id"`
	Provider        string     `json:"provider"`
	Status          string     `json:"status"`
	Grant           string     `json:"grant"`
	TokenType       string     `json:"token_type"`
	Scope           string     `json:"scope"`
	ExpiresAt       *time.Time `json:"expires_at"`
	ExpirySource    string     `json:"expiry_source"`
	HasRefreshToken bool       `json:"has_refresh_token"`
	RefreshExpires  *time.Time `json:"refresh_token_expires_at"`
	LastRefreshAt   *time.Time `json:"last_refresh_at"`
	Failure         *struct {
		Code          string     `json:"code"`
		Message       string     `json:"message"`
		Attempts      int        `json:"attempts"`
		NextAttemptAt *time.Time `json:"next_attempt_at"`
	} `json:"failure"`
	Metadata  json.RawMessage `json:"metadata"`
	Version   int64           `json:"version"`
	CreatedAt *time.Time      `json:"created_at"`
	UpdatedAt *time.Time      `json:"updated_at"`
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func (c *connection) failureText() string {
	if c.Failure == nil {
		return "-"
	}
	s := fmt.Sprintf("%s (%d attempts)", c.Failure.Code, c.Failure.Attempts)
	if c.Failure.NextAttemptAt != nil {
		s += ", next " + fmtTime(c.Failure.NextAttemptAt)
	}
	return s
}

// writeJSON prints an API answer as is, indented, for scripts.
func writeJSON(w io.Writer, raw []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(raw), "", "  "); err != nil {
		return err
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

func init() { registerCommand(newConnectionsCmd) }

const connectionsLong = `Commands against a running server: $TOKENBROKER_URL (default
http://127.0.0.1:8080), with the API key read from $TOKENBROKER_API_KEY (never
from a flag, so it stays out of shell history). Every command takes
--output json to print the server's JSON answer.`

func newConnectionsCmd(c *cli) *cobra.Command {
	var (
		provider, status, id, file, grant, scope, scopes, metadata, redirect, mcpServerURL string
		limit                                                                              int
		expiresIn                                                                          time.Duration
	)
	list := &cobra.Command{
		Use:   "list [--provider P] [--status S] [--limit N]",
		Short: "list connections (all pages unless --limit)",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := newAPIClient()
			if err != nil {
				return err
			}
			return listConnections(cmd.Context(), api, c.stdout, provider, status, limit, c.asJSON())
		},
	}
	list.Flags().StringVar(&provider, "provider", "", "only this provider's connections")
	list.Flags().StringVar(&status, "status", "", "only connections in this status: active, needs_reauth, revoked")
	list.Flags().IntVar(&limit, "limit", 0, "at most this many (default: all)")
	_ = list.RegisterFlagCompletionFunc("status", cobra.FixedCompletions([]string{"active", "needs_reauth", "revoked"}, cobra.ShellCompDirectiveNoFileComp))

	get := &cobra.Command{
		Use:   "get ID",
		Short: "a connection's status (exit 0 whatever the status)",
		Args:  exactArgs(1, "one connection ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := newAPIClient()
			if err != nil {
				return err
			}
			var conn connection
			var raw []byte
			if err := api.do(cmd.Context(), "GET", "/v1/connections/"+url.PathEscape(args[0]), nil, &conn, &raw); err != nil {
				return err
			}
			if c.asJSON() {
				return writeJSON(c.stdout, raw)
			}
			return printConnection(c.stdout, &conn)
		},
	}

	refresh := &cobra.Command{
		Use:   "refresh ID",
		Short: "refresh a connection's access token now",
		Args:  exactArgs(1, "one connection ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := newAPIClient()
			if err != nil {
				return err
			}
			var conn connection
			var raw []byte
			if err := api.do(cmd.Context(), "POST", "/v1/connections/"+url.PathEscape(args[0])+"/refresh", nil, &conn, &raw); err != nil {
				return err
			}
			if c.asJSON() {
				return writeJSON(c.stdout, raw)
			}
			fmt.Fprintf(c.stdout, "refreshed %s; the access token expires at %s\n", conn.ID, fmtTime(conn.ExpiresAt))
			return nil
		},
	}

	del := &cobra.Command{
		Use:   "delete ID",
		Short: "delete a connection (revoking at the provider where possible)",
		Args:  exactArgs(1, "one connection ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := newAPIClient()
			if err != nil {
				return err
			}
			var d struct {
				Revoked         bool   `json:"revoked"`
				RevocationError string `json:"revocation_error"`
			}
			var raw []byte
			if err := api.do(cmd.Context(), "DELETE", "/v1/connections/"+url.PathEscape(args[0]), nil, &d, &raw); err != nil {
				return err
			}
			if c.asJSON() {
				return writeJSON(c.stdout, raw)
			}
			switch {
			case d.Revoked:
				fmt.Fprintf(c.stdout, "deleted %s (revoked at the provider)\n", args[0])
			case d.RevocationError != "":
				fmt.Fprintf(c.stdout, "deleted %s; revocation at the provider failed: %s\n", args[0], d.RevocationError)
			default:
				fmt.Fprintf(c.stdout, "deleted %s\n", args[0])
			}
			return nil
		},
	}

	imp := &cobra.Command{
		Use:   "import (--file F | --id ID --provider P [flags])",
		Short: "import a connection obtained elsewhere",
		Long: `Import a connection.

  import --file F      the JSON body of POST /v1/connections (- for stdin)
  import --id ID --provider P [--expires-in D] [--scope S] [--metadata JSON]
                       tokens read from $TOKENBROKER_ACCESS_TOKEN and
                       $TOKENBROKER_REFRESH_TOKEN (never from flags)
  import --id ID --provider P --grant client_credentials [--scopes "a b"]
                       the server obtains a client-credentials token`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := importBody(c.stdin, file, id, provider, grant, scope, scopes, metadata, expiresIn, cmd.Flags())
			if err != nil {
				return err
			}
			api, err := newAPIClient()
			if err != nil {
				return err
			}
			var conn connection
			var raw []byte
			if err := api.do(cmd.Context(), "POST", "/v1/connections", body, &conn, &raw); err != nil {
				return err
			}
			if c.asJSON() {
				return writeJSON(c.stdout, raw)
			}
			fmt.Fprintf(c.stdout, "created %s (%s, %s); the access token expires at %s\n", conn.ID, conn.Provider, conn.Status, fmtTime(conn.ExpiresAt))
			return nil
		},
	}
	imp.Flags().StringVar(&file, "file", "", "JSON body of POST /v1/connections; - reads stdin")
	imp.Flags().StringVar(&id, "id", "", "connection id")
	imp.Flags().StringVar(&provider, "provider", "", "provider name")
	imp.Flags().StringVar(&grant, "grant", "", "client_credentials: the server obtains the token")
	imp.Flags().StringVar(&scope, "scope", "", "the imported token's scope")
	imp.Flags().StringVar(&scopes, "scopes", "", "with --grant client_credentials: space-separated scopes to request")
	imp.Flags().StringVar(&metadata, "metadata", "", "JSON to keep with the connection")
	imp.Flags().DurationVar(&expiresIn, "expires-in", 0, "the imported access token's remaining lifetime (e.g. 55m)")

	link := &cobra.Command{
		Use:   "connect-link (--provider P | --mcp-server-url URL) --id ID [--redirect URL] [--scopes \"a b\"]",
		Short: "a link for a person to connect (or reconnect) a connection",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			if id == "" || (provider == "") == (mcpServerURL == "") {
				return usageErr("connections connect-link: --id and one of --provider and --mcp-server-url are required")
			}
			api, err := newAPIClient()
			if err != nil {
				return err
			}
			body := map[string]any{"connection_id": id}
			if provider != "" {
				body["provider"] = provider
			} else {
				// An MCP server, known only by its URL (docs/mcp.md).
				body["mcp_server_url"] = mcpServerURL
			}
			if redirect != "" {
				body["redirect_url"] = redirect
			}
			if s := strings.Fields(scopes); len(s) > 0 {
				body["scopes"] = s
			}
			var s struct {
				URL       string    `json:"url"`
				ExpiresAt time.Time `json:"expires_at"`
			}
			var raw []byte
			if err := api.do(cmd.Context(), "POST", "/v1/connect-sessions", body, &s, &raw); err != nil {
				return err
			}
			if c.asJSON() {
				return writeJSON(c.stdout, raw)
			}
			// The link alone on stdout, so scripts can capture it.
			fmt.Fprintln(c.stdout, s.URL)
			fmt.Fprintf(c.stderr, "open it in a browser before %s; it works once\n", s.ExpiresAt.UTC().Format(time.RFC3339))
			return nil
		},
	}
	link.Flags().StringVar(&id, "id", "", "the connection to create or reconnect")
	link.Flags().StringVar(&provider, "provider", "", "provider name")
	link.Flags().StringVar(&redirect, "redirect", "", "where the browser goes when done (absolute http(s) URL)")
	link.Flags().StringVar(&scopes, "scopes", "", "space-separated scopes to request on top of the provider's")
	link.Flags().StringVar(&mcpServerURL, "mcp-server-url", "", "connect this MCP server, in place of --provider")

	g := group("connections", "list, inspect, import, refresh and delete connections on a running server", list, get, imp, refresh, del, link)
	g.Long = connectionsLong
	return g
}

func listConnections(ctx context.Context, api *apiClient, stdout io.Writer, provider, status string, limit int, asJSON bool) error {
	if limit < 0 {
		return usageErr("connections list: --limit must not be negative")
	}
	var all []json.RawMessage
	var conns []connection
	after := ""
	for {
		q := url.Values{}
		if provider != "" {
			q.Set("provider", provider)
		}
		if status != "" {
			q.Set("status", status)
		}
		if after != "" {
			q.Set("after", after)
		}
		page := 500
		if limit > 0 {
			page = min(limit-len(conns), 500)
		}
		q.Set("limit", strconv.Itoa(page))
		var p struct {
			Connections []json.RawMessage `json:"connections"`
			NextAfter   string            `json:"next_after"`
		}
		if err := api.do(ctx, "GET", "/v1/connections?"+q.Encode(), nil, &p, nil); err != nil {
			return err
		}
		for _, raw := range p.Connections {
			var c connection
			if err := json.Unmarshal(raw, &c); err != nil {
				return fmt.Errorf("the server's list is not the expected JSON: %w", err)
			}
			all = append(all, raw)
			conns = append(conns, c)
		}
		after = p.NextAfter
		if after == "" || (limit > 0 && len(conns) >= limit) {
			break
		}
	}
	if asJSON {
		if all == nil {
			all = []json.RawMessage{}
		}
		b, err := json.Marshal(map[string]any{"connections": all})
		if err != nil {
			return err
		}
		return writeJSON(stdout, b)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPROVIDER\tSTATUS\tEXPIRES\tFAILURE")
	for i := range conns {
		c := &conns[i]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.ID, c.Provider, c.Status, fmtTime(c.ExpiresAt), c.failureText())
	}
	return tw.Flush()
}

func printConnection(w io.Writer, c *connection) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("id", c.ID)
	row("provider", c.Provider)
	row("status", c.Status)
	if c.Grant != "" {
		row("grant", c.Grant)
	}
	row("scope", orDash(c.Scope))
	row("expires_at", fmtTime(c.ExpiresAt)+" ("+c.ExpirySource+")")
	rt := "no"
	if c.HasRefreshToken {
		rt = "yes, expires " + fmtTime(c.RefreshExpires)
	}
	row("refresh_token", rt)
	row("last_refresh_at", fmtTime(c.LastRefreshAt))
	row("failure", c.failureText())
	if c.Failure != nil && c.Failure.Message != "" {
		row("failure_message", c.Failure.Message)
	}
	if len(c.Metadata) > 0 {
		row("metadata", string(c.Metadata))
	}
	row("version", strconv.FormatInt(c.Version, 10))
	row("created_at", fmtTime(c.CreatedAt))
	row("updated_at", fmtTime(c.UpdatedAt))
	if c.Status == "needs_reauth" {
		fmt.Fprintln(tw, "\nthe provider refused to renew this connection; create a new grant with `tokenbroker connections connect-link`")
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// importBody builds the POST /v1/connections body from --file or flags.
// Token values come from a file or the environment, never from flags.
func importBody(stdin io.Reader, file, id, provider, grant, scope, scopes, metadata string, expiresIn time.Duration, fs *pflag.FlagSet) (any, error) {
	if file != "" {
		others := 0
		fs.Visit(func(f *pflag.Flag) {
			if f.Name != "file" {
				others++
			}
		})
		if others > 0 {
			return nil, usageErr("connections import: --file takes no other flags")
		}
		var data []byte
		var err error
		if file == "-" {
			data, err = io.ReadAll(io.LimitReader(stdin, 1<<20))
		} else {
			data, err = os.ReadFile(file)
		}
		if err != nil {
			return nil, fmt.Errorf("connections import: %w", err)
		}
		if !json.Valid(data) {
			return nil, usageErr("connections import: %s is not valid JSON", file)
		}
		return json.RawMessage(data), nil
	}
	if id == "" || provider == "" {
		return nil, usageErr("connections import: give --file, or --id and --provider")
	}
	body := map[string]any{"id": id, "provider": provider}
	if metadata != "" {
		if !json.Valid([]byte(metadata)) {
			return nil, usageErr("connections import: --metadata is not valid JSON")
		}
		body["metadata"] = json.RawMessage(metadata)
	}
	if grant != "" {
		if grant != "client_credentials" {
			return nil, usageErr("connections import: --grant must be client_credentials")
		}
		if scope != "" || expiresIn != 0 {
			return nil, usageErr("connections import: --scope and --expires-in are set by the provider for --grant client_credentials; use --scopes")
		}
		body["grant"] = grant
		if s := strings.Fields(scopes); len(s) > 0 {
			body["scopes"] = s
		}
		return body, nil
	}
	if scopes != "" {
		return nil, usageErr("connections import: --scopes goes with --grant client_credentials; an imported token's scope is --scope")
	}
	access := os.Getenv(envAccessToken)
	if access == "" {
		return nil, usageErr("connections import: set %s (and %s if there is one), or use --file", envAccessToken, envRefreshToken)
	}
	body["access_token"] = access
	if rt := os.Getenv(envRefreshToken); rt != "" {
		body["refresh_token"] = rt
	}
	if scope != "" {
		body["scope"] = scope
	}
	if expiresIn < 0 {
		return nil, usageErr("connections import: --expires-in must not be negative")
	}
	if expiresIn > 0 {
		body["expires_in"] = expiresIn.Seconds()
	}
	return body, nil
}
