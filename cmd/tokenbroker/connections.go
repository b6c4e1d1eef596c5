package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Exit statuses of the commands that talk to a running server (also in
// the usage text).
const (
	exitFailure  = 1 // server or network error
	exitUsage    = 2
	exitNotFound = 3 // no such connection (or connect session)
	exitReauth   = 4 // the provider refused to renew: a person must reconnect
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

const connectionsUsage = `usage: tokenbroker connections <command> [flags]

  list [--provider P] [--status S] [--limit N]     list connections (all pages unless --limit)
  get ID                                           a connection's status (exit 0 whatever the status)
  import --file F                                  import the JSON body of POST /v1/connections (- for stdin)
  import --id ID --provider P [--expires-in D] [--scope S] [--metadata JSON]
                                                   import tokens read from $TOKENBROKER_ACCESS_TOKEN
                                                   and $TOKENBROKER_REFRESH_TOKEN (never from flags)
  import --id ID --provider P --grant client_credentials [--scopes "a b"]
                                                   have the server obtain a client-credentials token
  refresh ID                                       refresh now
  delete ID                                        delete (revoking at the provider where possible)
  connect-link --provider P --id ID [--redirect URL] [--scopes "a b"]
                                                   a link for a person to connect (or reconnect) ID

Every command takes --json to print the server's JSON answer. The server is
$TOKENBROKER_URL (default http://127.0.0.1:8080); the API key is read from
$TOKENBROKER_API_KEY.
`

func cmdConnections(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageErr("connections needs a command\n\n%s", connectionsUsage)
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("connections "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, connectionsUsage) }
	asJSON := fs.Bool("json", false, "print the server's JSON answer")
	var (
		provider, status, id, file, grant, scope, scopes, metadata, redirect *string
		limit                                                                *int
		expiresIn                                                            *time.Duration
	)
	switch sub {
	case "list":
		provider = fs.String("provider", "", "only this provider's connections")
		status = fs.String("status", "", "only connections in this status: active, needs_reauth, revoked")
		limit = fs.Int("limit", 0, "at most this many (default: all)")
	case "import":
		file = fs.String("file", "", "JSON body of POST /v1/connections; - reads stdin")
		id = fs.String("id", "", "connection id")
		provider = fs.String("provider", "", "provider name")
		grant = fs.String("grant", "", "client_credentials: the server obtains the token")
		scope = fs.String("scope", "", "the imported token's scope")
		scopes = fs.String("scopes", "", "with --grant client_credentials: space-separated scopes to request")
		metadata = fs.String("metadata", "", "JSON to keep with the connection")
		expiresIn = fs.Duration("expires-in", 0, "the imported access token's remaining lifetime (e.g. 55m)")
	case "connect-link":
		id = fs.String("id", "", "the connection to create or reconnect")
		provider = fs.String("provider", "", "provider name")
		redirect = fs.String("redirect", "", "where the browser goes when done (absolute http(s) URL)")
		scopes = fs.String("scopes", "", "space-separated scopes to request on top of the provider's")
	case "get", "refresh", "delete":
	case "help", "-h", "--help":
		fmt.Fprint(stdout, connectionsUsage)
		return nil
	default:
		return usageErr("unknown connections command %q\n\n%s", sub, connectionsUsage)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	needID := sub == "get" || sub == "refresh" || sub == "delete"
	switch {
	case needID && fs.NArg() != 1:
		return usageErr("connections %s takes one connection ID", sub)
	case !needID && fs.NArg() != 0:
		return usageErr("connections %s takes no arguments, got %q", sub, fs.Args())
	}
	api, err := newAPIClient()
	if err != nil {
		return err
	}
	var raw []byte
	switch sub {
	case "list":
		return listConnections(ctx, api, stdout, *provider, *status, *limit, *asJSON)
	case "get":
		var c connection
		if err := api.do(ctx, "GET", "/v1/connections/"+url.PathEscape(fs.Arg(0)), nil, &c, &raw); err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, raw)
		}
		return printConnection(stdout, &c)
	case "refresh":
		var c connection
		if err := api.do(ctx, "POST", "/v1/connections/"+url.PathEscape(fs.Arg(0))+"/refresh", nil, &c, &raw); err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, raw)
		}
		fmt.Fprintf(stdout, "refreshed %s; the access token expires at %s\n", c.ID, fmtTime(c.ExpiresAt))
		return nil
	case "delete":
		var d struct {
			Revoked         bool   `json:"revoked"`
			RevocationError string `json:"revocation_error"`
		}
		if err := api.do(ctx, "DELETE", "/v1/connections/"+url.PathEscape(fs.Arg(0)), nil, &d, &raw); err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, raw)
		}
		switch {
		case d.Revoked:
			fmt.Fprintf(stdout, "deleted %s (revoked at the provider)\n", fs.Arg(0))
		case d.RevocationError != "":
			fmt.Fprintf(stdout, "deleted %s; revocation at the provider failed: %s\n", fs.Arg(0), d.RevocationError)
		default:
			fmt.Fprintf(stdout, "deleted %s\n", fs.Arg(0))
		}
		return nil
	case "import":
		body, err := importBody(*file, *id, *provider, *grant, *scope, *scopes, *metadata, *expiresIn, fs)
		if err != nil {
			return err
		}
		var c connection
		if err := api.do(ctx, "POST", "/v1/connections", body, &c, &raw); err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, raw)
		}
		fmt.Fprintf(stdout, "created %s (%s, %s); the access token expires at %s\n", c.ID, c.Provider, c.Status, fmtTime(c.ExpiresAt))
		return nil
	case "connect-link":
		if *id == "" || *provider == "" {
			return usageErr("connections connect-link: --id and --provider are required")
		}
		body := map[string]any{"connection_id": *id, "provider": *provider}
		if *redirect != "" {
			body["redirect_url"] = *redirect
		}
		if s := strings.Fields(*scopes); len(s) > 0 {
			body["scopes"] = s
		}
		var s struct {
			URL       string    `json:"url"`
			ExpiresAt time.Time `json:"expires_at"`
		}
		if err := api.do(ctx, "POST", "/v1/connect-sessions", body, &s, &raw); err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, raw)
		}
		// The link alone on stdout, so scripts can capture it.
		fmt.Fprintln(stdout, s.URL)
		fmt.Fprintf(stderr, "open it in a browser before %s; it works once\n", s.ExpiresAt.UTC().Format(time.RFC3339))
		return nil
	}
	return nil
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
func importBody(file, id, provider, grant, scope, scopes, metadata string, expiresIn time.Duration, fs *flag.FlagSet) (any, error) {
	if file != "" {
		others := 0
		fs.Visit(func(f *flag.Flag) {
			if f.Name != "file" && f.Name != "json" {
				others++
			}
		})
		if others > 0 {
			return nil, usageErr("connections import: --file takes no other flags")
		}
		var data []byte
		var err error
		if file == "-" {
			data, err = io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
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
