package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/app"
	"github.com/tokenbroker/tokenbroker/oauth/mcpauth"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: mcpconformance <mcp-server-url>")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	if err := run(ctx, os.Args[len(os.Args)-1]); err != nil {
		fmt.Fprintln(os.Stderr, "mcpconformance:", err)
		os.Exit(1)
	}
}

type client struct {
	base, key string
	http      *http.Client
	sid       string
	next      int
}

func run(ctx context.Context, serverURL string) error {
	dir, err := os.MkdirTemp("", "tb-conformance-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	base := "http://" + ln.Addr().String()
	cfg := fmt.Sprintf("listen: %s\npublic_url: %s\ndata_dir: %s\ndatabase: sqlite:%s/tb.db\nencryption_keys_file: %s/keys\nlog_level: debug\nmcp:\n  allow_private_addresses: true\n",
		ln.Addr(), base, dir, dir, dir)
	if pre, err := preRegistered(ctx, serverURL); err != nil {
		return err
	} else if pre != "" {
		cfg += pre
	}
	path := filepath.Join(dir, "tokenbroker.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return err
	}
	c, err := config.Load(path)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	a, err := app.New(ctx, c, app.Options{Logger: log})
	if err != nil {
		return err
	}
	defer a.Close()
	var out bytes.Buffer
	if _, err := a.BootstrapAPIKey(ctx, &out, time.Now()); err != nil {
		return err
	}
	key := regexp.MustCompile(`tbk_[A-Za-z0-9_-]+`).FindString(out.String())
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.ServeListener(sctx, ln, nil) }()
	defer func() { stop(); <-done }()

	cl := &client{base: base, key: key, http: &http.Client{Timeout: 20 * time.Second}}
	if err := cl.connect(ctx, serverURL); err != nil {
		return err
	}
	if _, err := cl.call(ctx, serverURL, "initialize", map[string]any{"protocolVersion": "2025-11-25",
		"capabilities": map[string]any{}, "clientInfo": map[string]any{"name": "tokenbroker-conformance", "version": "1.0.0"}}); err != nil {
		return err
	}
	if _, err := cl.call(ctx, serverURL, "notifications/initialized", nil); err != nil {
		return err
	}
	res, err := cl.call(ctx, serverURL, "tools/list", map[string]any{})
	if err != nil {
		return err
	}
	var list struct {
		Result struct {
			Tools []struct {
				Name string `json:"name"`
			} `json:"tools"`
		} `json:"result"`
	}
	_ = json.Unmarshal(res, &list)
	for _, t := range list.Result.Tools {
		if _, err := cl.call(ctx, serverURL, "tools/call", map[string]any{"name": t.Name, "arguments": map[string]any{}}); err != nil {
			return err
		}
	}
	return nil
}

// preRegistered returns the mcp.clients config for the scenario's
// pre-registered client, if it has one.
func preRegistered(ctx context.Context, serverURL string) (string, error) {
	var sc struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	if raw := os.Getenv("MCP_CONFORMANCE_CONTEXT"); raw != "" {
		_ = json.Unmarshal([]byte(raw), &sc)
	}
	if sc.ClientID == "" {
		return "", nil
	}
	d, err := mcpauth.Discover(ctx, mcpauth.Options{Policy: mcpauth.HostPolicy{AllowPrivate: true}}, serverURL)
	if err != nil {
		return "", err
	}
	os.Setenv("TB_CONFORMANCE_CLIENT_SECRET", sc.ClientSecret)
	return fmt.Sprintf("  clients:\n    - issuer: %q\n      client_id: %q\n      client_secret_env: TB_CONFORMANCE_CLIENT_SECRET\n", d.Issuer, sc.ClientID), nil
}

func (c *client) api(ctx context.Context, method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	req.Header.Set("Authorization", "Bearer "+c.key)
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, nil
}

// connect makes a connect session and follows its link.
func (c *client) connect(ctx context.Context, serverURL string) error {
	code, body, err := c.api(ctx, http.MethodPost, "/v1/connect-sessions", map[string]any{"connection_id": "conformance", "mcp_server_url": serverURL})
	if err != nil {
		return err
	}
	if code != http.StatusCreated {
		return fmt.Errorf("connect session: %d %s", code, body)
	}
	var sess struct {
		URL string `json:"url"`
	}
	_ = json.Unmarshal(body, &sess)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, sess.URL, nil)
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("connect flow ended with %d at %s: %.300s", resp.StatusCode, resp.Request.URL, page)
	}
	return nil
}

var errStepUpLimit = errors.New("the server still asks for more scopes after two step-ups")

// call makes one JSON-RPC call through the proxy and returns the answer
// (the last JSON-RPC message of an event stream). On 403
// insufficient_scope it steps up (a new connect session) and retries, at
// most twice.
func (c *client) call(ctx context.Context, serverURL, method string, params any) ([]byte, error) {
	msg := map[string]any{"jsonrpc": "2.0", "method": method}
	if !strings.HasPrefix(method, "notifications/") {
		c.next++
		msg["id"] = c.next
	}
	if params != nil {
		msg["params"] = params
	}
	body, _ := json.Marshal(msg)
	for stepUps := 0; ; stepUps++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/v1/proxy/conformance/", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+c.key)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
		if c.sid != "" {
			req.Header.Set("Mcp-Session-Id", c.sid)
		}
		resp, err := c.http.Do(req)
		if err != nil {
			return nil, err
		}
		if sid := resp.Header.Get("Mcp-Session-Id"); sid != "" {
			c.sid = sid
		}
		if resp.StatusCode == http.StatusForbidden {
			ch, _ := mcpauth.BearerChallenge(resp.Header)
			resp.Body.Close()
			if ch.Params["error"] != "insufficient_scope" {
				return nil, fmt.Errorf("%s: 403", method)
			}
			if stepUps == 2 {
				return nil, errStepUpLimit
			}
			if err := c.connect(ctx, serverURL); err != nil {
				return nil, err
			}
			continue
		}
		defer resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			b, _ := io.ReadAll(resp.Body)
			return nil, fmt.Errorf("%s: %d %.300s", method, resp.StatusCode, b)
		}
		if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			return io.ReadAll(resp.Body)
		}
		var last []byte
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data:"); ok && strings.TrimSpace(d) != "" {
				last = []byte(strings.TrimSpace(d))
				var m struct {
					ID any `json:"id"`
				}
				if json.Unmarshal(last, &m) == nil && m.ID != nil {
					return last, nil
				}
			}
		}
		return last, sc.Err()
	}
}
