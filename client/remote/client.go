package remote

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/oauth"
)

// DefaultTimeout bounds each request of a [Client] whose Config has no
// HTTPClient. A token read that refreshes at a slow provider takes as long
// as the provider; the server bounds that by its own refresh timeout.
const DefaultTimeout = 60 * time.Second

// maxBody bounds what a Client reads of an answer other than a proxied one.
const maxBody = 4 << 20

// Config configures a [Client]. BaseURL and APIKey are required.
type Config struct {
	// BaseURL is where tokenbroker listens, such as http://127.0.0.1:8080.
	BaseURL string
	// APIKey authenticates every request (Authorization: Bearer). Load it
	// from the environment or a file, never from source code.
	APIKey string
	// HTTPClient sends the requests. Default: a client with a
	// DefaultTimeout timeout.
	HTTPClient *http.Client
	// Retry governs retries of requests that are safe to repeat; zero
	// fields take oauth.Backoff's defaults (3 attempts). MaxAttempts 1
	// disables retries.
	Retry oauth.Backoff
	// Rand draws backoff jitter from [0, 1). Default math/rand/v2.
	Rand func() float64
}

// Client calls a tokenbroker server's HTTP API. It is safe for concurrent
// use.
type Client struct {
	base  string // scheme://host[/prefix], no trailing slash
	auth  string
	http  *http.Client
	retry oauth.Backoff
	rand  func() float64
}

// New checks cfg and returns a Client. It makes no request.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(cfg.BaseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("remote: Config.BaseURL %q is not an absolute http(s) URL", cfg.BaseURL)
	}
	if strings.TrimSpace(cfg.APIKey) == "" {
		return nil, errors.New("remote: Config.APIKey is empty; create one with `tokenbroker apikey create`")
	}
	if cfg.Retry.Base < 0 || cfg.Retry.Max < 0 || cfg.Retry.MaxAttempts < 0 {
		return nil, errors.New("remote: Config.Retry has a negative field")
	}
	c := &Client{base: strings.TrimRight(u.String(), "/"), auth: "Bearer " + cfg.APIKey, http: cfg.HTTPClient, retry: cfg.Retry, rand: cfg.Rand}
	if c.http == nil {
		c.http = &http.Client{Timeout: DefaultTimeout}
	}
	if c.retry.MaxAttempts == 0 {
		c.retry.MaxAttempts = oauth.DefaultMaxAttempts
	}
	if c.retry.Base == 0 {
		c.retry.Base = oauth.DefaultBackoffBase
	}
	if c.retry.Max == 0 {
		c.retry.Max = oauth.DefaultBackoffMax
	}
	if c.rand == nil {
		c.rand = rand.Float64
	}
	return c, nil
}

// Sentinel errors an [*Error] matches with errors.Is, besides
// [oauth.ErrReauthRequired] and [oauth.ErrTransient].
var (
	ErrUnauthenticated = errors.New("remote: unauthenticated")
	ErrForbidden       = errors.New("remote: forbidden")
	ErrNotFound        = errors.New("remote: not found")
	ErrAlreadyExists   = errors.New("remote: already exists")
	ErrInvalidRequest  = errors.New("remote: invalid request")
)

// Error is an error answer of the API ({"error":{"code","message"}}), or a
// failure to get one.
type Error struct {
	Op         string // the operation, such as "getToken"
	StatusCode int    // 0 when no answer arrived
	Code       string // the API's error code ("reauth_required"), or "network"
	Message    string
	// RetryAfter is the server's Retry-After on a 503.
	RetryAfter time.Duration
	// Err is the cause: for reauth_required and provider_unavailable an
	// [*oauth.Error] of the same code, so [oauth.Terminal] and
	// [oauth.RetryAfter] work on it; a network error when no answer came.
	Err error
}

func (e *Error) Error() string {
	msg := "remote: " + e.Op + ": "
	if e.StatusCode == 0 && e.Err != nil {
		return msg + e.Err.Error() // no answer: the cause says it all
	}
	if e.StatusCode != 0 {
		msg += fmt.Sprintf("HTTP %d ", e.StatusCode)
	}
	msg += e.Code
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Is matches the sentinel of e's code.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrUnauthenticated:
		return e.Code == "unauthenticated"
	case ErrForbidden:
		return e.Code == "forbidden"
	case ErrNotFound:
		return e.Code == "not_found"
	case ErrAlreadyExists:
		return e.Code == "already_exists"
	case ErrInvalidRequest:
		return e.Code == "invalid_request"
	}
	return false
}

// transient reports whether trying again may help.
func (e *Error) transient() bool { return errors.Is(e, oauth.ErrTransient) }

// apiError reads an error answer.
func apiError(op string, resp *http.Response, body []byte) *Error {
	var env struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	e := &Error{Op: op, StatusCode: resp.StatusCode}
	if json.Unmarshal(body, &env) == nil && env.Error.Code != "" {
		e.Code, e.Message = env.Error.Code, env.Error.Message
	} else {
		e.Code = "http_" + strconv.Itoa(resp.StatusCode)
	}
	if s, err := strconv.Atoi(strings.TrimSpace(resp.Header.Get("Retry-After"))); err == nil && s > 0 {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	switch {
	case e.Code == "reauth_required":
		e.Err = &oauth.Error{Op: op, StatusCode: resp.StatusCode, Code: e.Code, Description: e.Message, Kind: oauth.KindTerminal}
	case e.Code == "provider_unavailable" || resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		e.Err = &oauth.Error{Op: op, StatusCode: resp.StatusCode, Code: e.Code, Description: e.Message,
			Kind: oauth.KindTransient, RetryAfter: e.RetryAfter}
	}
	return e
}

// call sends one API request, retrying it while it is safe and useful, and
// decodes a 2xx answer into out (when out is not nil).
func (c *Client) call(ctx context.Context, o op, path []string, query url.Values, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("remote: %s: encoding request: %w", o.name, err)
		}
	}
	target := c.url(o, path, query)
	for attempt := 0; ; attempt++ {
		err := c.once(ctx, o, target, body, out)
		var re *Error
		if err == nil || !o.safe || attempt+1 >= c.retry.MaxAttempts || !errors.As(err, &re) || !re.transient() {
			return err
		}
		d := c.retry.Delay(attempt, c.rand())
		if re.RetryAfter > d {
			if re.RetryAfter > c.retry.Max {
				return err // longer than a call waits: the caller decides
			}
			d = re.RetryAfter
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

func (c *Client) once(ctx context.Context, o op, target string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, o.method, target, rd)
	if err != nil {
		return fmt.Errorf("remote: %s: %w", o.name, err)
	}
	req.Header.Set("Authorization", c.auth)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &Error{Op: o.name, Code: oauth.CodeNetwork, Err: oauth.NetworkError(o.name, err)}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return &Error{Op: o.name, Code: oauth.CodeNetwork, Err: oauth.NetworkError(o.name, err)}
	}
	if resp.StatusCode/100 != 2 {
		return apiError(o.name, resp, data)
	}
	switch dst := out.(type) {
	case nil:
		return nil
	case *[]byte:
		*dst = data
		return nil
	default:
		if err := json.Unmarshal(data, out); err != nil {
			return &Error{Op: o.name, StatusCode: resp.StatusCode, Code: oauth.CodeInvalidResponse,
				Message: "the answer is not the expected JSON", Err: err}
		}
		return nil
	}
}

// url fills o's path template with the escaped path values, in order.
func (c *Client) url(o op, path []string, query url.Values) string {
	p := o.path
	for _, v := range path {
		i, j := strings.IndexByte(p, '{'), strings.IndexByte(p, '}')
		if i < 0 || j < i {
			break
		}
		p = p[:i] + url.PathEscape(v) + p[j+1:]
	}
	if len(query) > 0 {
		p += "?" + query.Encode()
	}
	return c.base + p
}
