package cluster

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
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tokenbroker/tokenbroker/internal/authztest"
	"github.com/tokenbroker/tokenbroker/internal/pgtest"
)

// binary is the tokenbroker executable TestMain builds once for the whole
// run; the tests only read it.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tbcluster-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		os.Exit(1)
	}
	binary, err = buildBinary(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster: building tokenbroker:", err)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	code := pgtest.Run(m)
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// buildBinary builds ./cmd/tokenbroker into dir. It is built without -race
// even when the tests are: the replicas' own races are the unit tests'
// business, and an uninstrumented build is several times faster to make and
// to run.
func buildBinary(dir string) (string, error) {
	// scripts/test.sh puts go on the PATH (adding /usr/local/go/bin when
	// needed), so there is no fallback to guess.
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("the go tool is not on the PATH: %w", err)
	}
	out, err := exec.Command(goTool, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("go env GOMOD: not inside the module")
	}
	bin := filepath.Join(dir, "tokenbroker")
	cmd := exec.Command(goTool, "build", "-o", bin, "./cmd/tokenbroker")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%w\n%s", err, out)
	}
	return bin, nil
}

// providerName is the one provider every replica is configured with.
const providerName = "acme"

// secretEnv names the variable the replicas read the client secret from.
const secretEnv = "CLUSTER_ACME_SECRET"

// clusterOptions shape a [cluster].
type clusterOptions struct {
	replicas int
	// leaseTTL and refreshTimeout are refresh.lease_ttl and refresh.timeout
	// in the replicas' config; empty keeps the defaults.
	leaseTTL       string
	refreshTimeout string
	// noScheduler turns the background scheduler off, for tests that must
	// decide which replica refreshes a due connection.
	noScheduler bool
	// rotation and rotationGrace are the provider's rotation and
	// rotation_grace; empty keeps the default (strict rotation).
	rotation      string
	rotationGrace string
	// apiBaseURL is the provider's api_base_url, for the proxy; empty: none.
	apiBaseURL string
}

// cluster is a set of tokenbroker processes sharing one fresh PostgreSQL
// database and one key file, configured with one provider: authz.
type cluster struct {
	t        *testing.T
	dir      string
	dsn      string
	authz    *authztest.Server
	key      string // an admin API key
	replicas []*replica
	client   *http.Client
	keysFile string
	opts     clusterOptions
}

// replica is one running tokenbroker process.
type replica struct {
	name string
	cmd  *exec.Cmd
	base string // http://127.0.0.1:port
	out  *syncBuffer
	logs *syncBuffer
	done chan struct{} // closed once the process has exited
}

func newCluster(t *testing.T, authz *authztest.Server, opts clusterOptions) *cluster {
	t.Helper()
	c := &cluster{
		t:     t,
		dir:   t.TempDir(),
		dsn:   pgtest.FreshDatabase(t),
		authz: authz,
		client: &http.Client{
			// Bounds every call: an answer that takes longer is a hang, and
			// the tests report it as such.
			Timeout: 30 * time.Second,
			Transport: &http.Transport{
				MaxIdleConns:        1024,
				MaxIdleConnsPerHost: 512,
				IdleConnTimeout:     30 * time.Second,
			},
		},
	}
	t.Cleanup(c.client.CloseIdleConnections)
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, r := range c.replicas {
			t.Logf("%s stderr, last lines:\n%s", r.name, lastLines(r.logs.String(), 40))
		}
	})
	keysFile := filepath.Join(c.dir, "keys")
	c.keysFile, c.opts = keysFile, opts
	// The first replica creates the key file, migrates the empty database
	// and prints the bootstrap admin key; the others start together after
	// it, as an operator scaling out would start them.
	first := c.start(0, keysFile, opts)
	c.key = first.bootstrapKey(t)
	var wg sync.WaitGroup
	rest := make([]*replica, opts.replicas-1)
	errs := make([]error, len(rest))
	for i := range rest {
		wg.Go(func() { rest[i], errs[i] = c.launch(i+1, keysFile, opts) })
	}
	wg.Wait()
	for i, r := range rest {
		if r != nil {
			c.replicas = append(c.replicas, r)
		}
		if errs[i] != nil {
			t.Fatalf("replica %d: %v", i+1, errs[i])
		}
	}
	return c
}

func (c *cluster) start(i int, keysFile string, opts clusterOptions) *replica {
	c.t.Helper()
	r, err := c.launch(i, keysFile, opts)
	if r != nil {
		c.replicas = append(c.replicas, r)
	}
	if err != nil {
		c.t.Fatalf("replica %d: %v", i, err)
	}
	return r
}

// launch writes replica i's config and starts it. The replica listens on
// port 0; its address is read from its start-up log line, so no port has to
// be guessed free. It returns once /healthz answers. A returned replica is
// killed when the test ends, even with an error.
func (c *cluster) launch(i int, keysFile string, opts clusterOptions) (*replica, error) {
	var refresh string
	if opts.leaseTTL != "" || opts.refreshTimeout != "" {
		refresh = "refresh:\n"
		if opts.leaseTTL != "" {
			refresh += "  lease_ttl: " + opts.leaseTTL + "\n"
		}
		if opts.refreshTimeout != "" {
			refresh += "  timeout: " + opts.refreshTimeout + "\n"
		}
	}
	if opts.noScheduler {
		refresh += "scheduler:\n  disabled: true\n"
	}
	dataDir := filepath.Join(c.dir, fmt.Sprintf("replica-%d", i))
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
data_dir: %s
database: %s
encryption_keys_file: %s
log_level: info
providers:
  - name: %s
    token_url: %s
    introspection_url: %s
    revocation_url: %s
    client_id: %s
    client_secret_env: %s
    refresh_window: 5m
%s%s`, yamlQuote(dataDir), yamlQuote(c.dsn), yamlQuote(keysFile), providerName,
		yamlQuote(c.authz.TokenURL()), yamlQuote(c.authz.IntrospectionURL()), yamlQuote(c.authz.RevocationURL()),
		yamlQuote(c.authz.ClientID), secretEnv, rotationYAML(opts), refresh)
	cfgPath := filepath.Join(c.dir, fmt.Sprintf("replica-%d.yaml", i))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}

	r := &replica{
		name: fmt.Sprintf("replica-%d", i),
		out:  &syncBuffer{},
		logs: &syncBuffer{},
		done: make(chan struct{}),
	}
	r.cmd = exec.Command(binary, "serve", "--config", cfgPath)
	r.cmd.Env = append(os.Environ(), secretEnv+"="+c.authz.ClientSecret)
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.logs
	if err := startProcess(r.cmd); err != nil {
		return nil, err
	}
	go func() {
		_ = r.cmd.Wait()
		close(r.done)
	}()
	c.t.Cleanup(r.kill)

	addr, err := r.listenAddr()
	if err != nil {
		return r, err
	}
	r.base = "http://" + addr
	for range 200 {
		resp, err := c.client.Get(r.base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return r, nil
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	return r, errors.New("/healthz never answered 200")
}

var listenRE = regexp.MustCompile(`msg="tokenbroker listening" addr=(\S+)`)

// listenAddr waits for the replica to log the address it bound.
func (r *replica) listenAddr() (string, error) {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if m := listenRE.FindStringSubmatch(r.logs.String()); m != nil {
			return m[1], nil
		}
		select {
		case <-r.done:
			return "", fmt.Errorf("exited during start-up: %s", r.cmd.ProcessState)
		case <-time.After(10 * time.Millisecond):
		}
	}
	return "", errors.New("did not log its listen address within a minute")
}

var keyRE = regexp.MustCompile(`tbk_[A-Za-z0-9_-]+`)

// bootstrapKey returns the admin key the replica printed on its first start
// against the empty database.
func (r *replica) bootstrapKey(t *testing.T) string {
	t.Helper()
	// The replica prints the key before it listens; the copy from its
	// stdout pipe into the buffer may still be on its way.
	for range 200 {
		if k := keyRE.FindString(r.out.String()); k != "" {
			return k
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s printed no bootstrap API key", r.name)
	return ""
}

// kill ends the process with SIGKILL, as a crash would, and waits for it.
func (r *replica) kill() {
	select {
	case <-r.done:
		return
	default:
	}
	_ = r.cmd.Process.Kill()
	<-r.done
}

// answer is an HTTP answer, read in full.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// decode reads the body as JSON into v.
func (a answer) decode(v any) error { return json.Unmarshal(a.body, v) }

// errorCode is the API error code of an error answer, "" if there is none.
func (a answer) errorCode() string {
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = a.decode(&e)
	return e.Error.Code
}

// send calls the replica's API with the admin key.
func (c *cluster) send(ctx context.Context, r *replica, method, path string, body any) (answer, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return answer{}, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, r.base+path, rd)
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return answer{}, err
	}
	return readAnswer(resp)
}

// readAnswer reads and closes resp's body.
func readAnswer(resp *http.Response) (answer, error) {
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// call is send for the test goroutine: a transport error fails the test.
func (c *cluster) call(r *replica, method, path string, body any) answer {
	c.t.Helper()
	a, err := c.send(c.t.Context(), r, method, path, body)
	if err != nil {
		c.t.Fatalf("%s %s on %s: %v", method, path, r.name, err)
	}
	return a
}

// importExpired imports a connection whose access token expired a minute
// ago, so that the next GET …/token must refresh it, and returns its
// version.
func (c *cluster) importExpired(r *replica, id, access, refresh string) int64 {
	c.t.Helper()
	return c.importConnection(r, map[string]any{
		"id": id, "provider": providerName, "access_token": access, "refresh_token": refresh,
		"expires_at": time.Now().Add(-time.Minute).UTC().Format(time.RFC3339),
	})
}

func (c *cluster) importConnection(r *replica, body map[string]any) int64 {
	c.t.Helper()
	a := c.call(r, http.MethodPost, "/v1/connections", body)
	if a.status != http.StatusCreated {
		c.t.Fatalf("import %v on %s: %d %s", body["id"], r.name, a.status, a.errorCode())
	}
	var v connectionView
	if err := a.decode(&v); err != nil {
		c.t.Fatalf("import %v: answer is not a connection: %v", body["id"], err)
	}
	return v.Version
}

// connectionView is the part of GET /v1/connections/{id} the tests read.
type connectionView struct {
	Status  string `json:"status"`
	Version int64  `json:"version"`
	Failure *struct {
		Code     string `json:"code"`
		Attempts int    `json:"attempts"`
	} `json:"failure"`
}

func (c *cluster) connection(r *replica, id string) connectionView {
	c.t.Helper()
	a := c.call(r, http.MethodGet, "/v1/connections/"+id, nil)
	if a.status != http.StatusOK {
		c.t.Fatalf("GET connection %s on %s: %d %s", id, r.name, a.status, a.errorCode())
	}
	var v connectionView
	if err := a.decode(&v); err != nil {
		c.t.Fatalf("GET connection %s: %v", id, err)
	}
	return v
}

// accessToken is the access_token of a GET …/token answer, "" if none.
func (a answer) accessToken() string {
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	_ = a.decode(&tok)
	return tok.AccessToken
}

// row is a connection's row as PostgreSQL holds it, read behind the
// replicas' backs.
type row struct {
	version    int64
	leaseOwner *string
	leaseUntil *time.Time
	access     []byte // sealed
	refresh    []byte // sealed
	status     string
	hasFailure bool
	// refreshStarted: a refresh was marked as started and not finished.
	refreshStarted bool
}

func (c *cluster) row(id string) row {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.t.Context(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.dsn)
	if err != nil {
		c.t.Fatalf("connect to the cluster's database: %v", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var r row
	err = conn.QueryRow(ctx, `SELECT version, lease_owner, lease_until, access_token, refresh_token, status, failure IS NOT NULL,
		refresh_started_at IS NOT NULL
		FROM connections WHERE id = $1`, id).
		Scan(&r.version, &r.leaseOwner, &r.leaseUntil, &r.access, &r.refresh, &r.status, &r.hasFailure, &r.refreshStarted)
	if err != nil {
		c.t.Fatalf("read row %s: %v", id, err)
	}
	return r
}

// adminExec runs statements on the server's postgres database, outside the
// cluster's own database.
func (c *cluster) adminExec(stmts ...string) {
	c.t.Helper()
	dsn, err := withDatabase(c.dsn, "postgres")
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		c.t.Fatalf("connect to the postgres database: %v", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			c.t.Fatalf("%s: %v", s, err)
		}
	}
}

// databaseName is the name of the cluster's database.
func (c *cluster) databaseName() string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.t.Context(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.dsn)
	if err != nil {
		c.t.Fatalf("connect to the cluster's database: %v", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var name string
	if err := conn.QueryRow(ctx, `SELECT current_database()`).Scan(&name); err != nil {
		c.t.Fatal(err)
	}
	return name
}

// withDatabase returns dsn with its database replaced by name, for both
// forms pgx reads: a URL and key=value pairs.
func withDatabase(dsn, name string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", errors.New("the test database DSN is not a valid URL")
		}
		u.Path, u.RawPath = "/"+name, ""
		return u.String(), nil
	}
	return dsn + " dbname=" + name, nil
}

// assertNoSecretsLogged fails the test if any replica logged one of the
// secrets. The values are never printed.
func (c *cluster) assertNoSecretsLogged(secrets ...string) {
	c.t.Helper()
	secrets = append(slices.Clone(secrets), c.key, c.authz.ClientSecret)
	for _, r := range c.replicas {
		logs := r.logs.String()
		for i, s := range secrets {
			if s != "" && strings.Contains(logs, s) {
				c.t.Errorf("%s logged secret #%d (length %d)", r.name, i, len(s))
			}
		}
	}
}

// yamlQuote quotes s as a single-quoted YAML scalar.
func yamlQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// poll calls cond every interval until it reports true, at most n times,
// and reports whether it did.
func poll(n int, interval time.Duration, cond func() bool) bool {
	for range n {
		if cond() {
			return true
		}
		time.Sleep(interval)
	}
	return false
}

// percentile returns the p-th percentile of sorted durations.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)*p/100, len(sorted)-1)]
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// syncBuffer is a bytes.Buffer safe for the process's writer and the test
// to use at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// rotationYAML is the provider's rotation settings from opts, indented for
// the provider entry.
func rotationYAML(opts clusterOptions) string {
	var s string
	if opts.rotation != "" {
		s += "    rotation: " + opts.rotation + "\n"
	}
	if opts.rotationGrace != "" {
		s += "    rotation_grace: " + opts.rotationGrace + "\n"
	}
	if opts.apiBaseURL != "" {
		s += "    api_base_url: " + yamlQuote(opts.apiBaseURL) + "\n"
	}
	return s
}
