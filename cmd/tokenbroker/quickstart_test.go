package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readmeQuickstart returns the shell blocks of the README's quickstart
// section, in order.
func readmeQuickstart(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	start := strings.Index(s, "\n## Quickstart")
	if start < 0 {
		t.Fatal("README has no Quickstart section")
	}
	s = s[start+1:]
	if end := strings.Index(s, "\n## "); end >= 0 {
		s = s[:end]
	}
	var blocks []string
	for _, m := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(s, -1) {
		blocks = append(blocks, m[1])
	}
	return blocks
}

// TestREADMEQuickstart does what the README's quickstart says, from this
// checkout, with the binary `go install` builds, and checks every step's
// output. The only changes to the README's text: the server listens on a
// free port instead of 8080 (TOKENBROKER_LISTEN, and the same address in
// $TB) and the key placeholder is the key serve printed. The browser steps
// (open the link, Allow) are done by an HTTP client with cookies, as a
// browser submits the consent form.
func TestREADMEQuickstart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the quickstart needs the go command: %v", err)
	}
	blocks := readmeQuickstart(t)
	if len(blocks) != 7 {
		t.Fatalf("the quickstart has %d shell blocks, this test knows 7; update both together", len(blocks))
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "bin")
	work := filepath.Join(tmp, "work") // the user's second terminal's directory
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "GOBIN="+bin, "PATH="+bin+string(os.PathListSeparator)+filepath.Dir(goBin)+string(os.PathListSeparator)+os.Getenv("PATH"))
	for _, k := range []string{"TOKENBROKER_URL", "TOKENBROKER_API_KEY", "TOKENBROKER_DATA_DIR", "TOKENBROKER_CONFIG"} {
		env = append(env, k+"=")
	}
	sh := func(dir, script string) (string, int) {
		t.Helper()
		cmd := exec.Command("bash", "-c", script)
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("%s: %v", script, err)
		}
		return string(out), cmd.ProcessState.ExitCode()
	}

	// 1. Install and check the version (never the old "dev").
	out, code := sh(root, blocks[0])
	if code != 0 || !regexp.MustCompile(`(?m)^tokenbroker (v\d+\.\d+\.\d+\S*|devel\S*)$`).MatchString(out) {
		t.Fatalf("install block: exit %d\n%s", code, out)
	}

	// 2. serve --demo, in its own terminal.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	serveOut, serveErr := newWatchBuffer(), newWatchBuffer()
	serve := exec.Command("bash", "-c", blocks[1])
	serve.Dir = filepath.Join(tmp, "server")
	if err := os.MkdirAll(serve.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	serve.Env = append(env, "TOKENBROKER_LISTEN="+addr)
	serve.Stdout, serve.Stderr = serveOut, serveErr
	serve.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan int, 1)
	go func() { _ = serve.Wait(); exited <- serve.ProcessState.ExitCode() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = syscall.Kill(-serve.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})
	key := serveOut.waitFor(t, bootstrapKeyRE, exited)
	if !strings.Contains(serveOut.String(), "DEMO MODE") || !strings.Contains(serveOut.String(), "not a real provider") {
		t.Errorf("no demo banner:\n%s", serveOut)
	}
	serveErr.waitFor(t, regexp.MustCompile(`msg="tokenbroker listening"`), exited)

	// 3. The second terminal's exports, with the real address and key.
	exports := strings.NewReplacer("127.0.0.1:8080", addr, "tbk_…", key).Replace(blocks[2])
	if strings.Contains(exports, "…") || !strings.Contains(exports, key) {
		t.Fatalf("the exports block changed shape:\n%s", blocks[2])
	}
	base := "http://" + addr

	// Each remaining line, with what it must print.
	type step struct {
		line string
		want *regexp.Regexp
		code int
		then func(out string)
	}
	connectLink := func(out string) {
		link, _, _ := strings.Cut(out, "\n") // the link alone on stdout; a hint follows on stderr
		browserConsent(t, link, base)
	}
	steps := []step{
		{"tokenbroker connections connect-link --provider demo --id alice", regexp.MustCompile(`^` + regexp.QuoteMeta(base) + `/v1/connect/\S+\n`), 0, connectLink},
		{`curl -s $TB/v1/connections/alice/token -H "Authorization: Bearer $KEY"`, regexp.MustCompile(`"access_token":"demo_at_[^"]+","token_type":"Bearer"`), 0, nil},
		{`curl -s $TB/v1/proxy/alice/me -H "Authorization: Bearer $KEY"`, regexp.MustCompile(`"user":"alice"`), 0, nil},
		{"tokenbroker connections refresh alice", regexp.MustCompile(`^refreshed alice; the access token expires at `), 0, nil},
		{"tokenbroker connections list", regexp.MustCompile(`(?m)^alice\s+demo\s+active\s`), 0, nil},
		{"curl -s -X POST $TB/demo/grants/revoke", regexp.MustCompile(`^\{"revoked":1\}`), 0, nil},
		{`tokenbroker connections refresh alice; echo "exit status $?"`, regexp.MustCompile(`(?s)reauth_required.*exit status 4`), 0, nil},
		{"tokenbroker connections get alice", regexp.MustCompile(`(?m)^status:\s+needs_reauth$`), 0, nil},
		{"tokenbroker connections connect-link --provider demo --id alice", regexp.MustCompile(`^` + regexp.QuoteMeta(base) + `/v1/connect/\S+\n`), 0, connectLink},
	}
	var lines []string
	for _, b := range blocks[3:] {
		for l := range strings.SplitSeq(strings.TrimSpace(b), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				lines = append(lines, l)
			}
		}
	}
	if len(lines) != len(steps) {
		t.Fatalf("the quickstart has %d commands after the exports, this test knows %d:\n%s", len(lines), len(steps), strings.Join(lines, "\n"))
	}
	for i, st := range steps {
		if lines[i] != st.line {
			t.Fatalf("quickstart command %d is %q, this test knows %q; update both together", i+1, lines[i], st.line)
		}
		out, code := sh(work, exports+"\n"+st.line)
		if code != st.code || !st.want.MatchString(out) {
			t.Fatalf("%s\nexit %d, output:\n%s\nwant %s", st.line, code, out, st.want)
		}
		if strings.Contains(out, key) {
			t.Errorf("%s printed the API key", st.line)
		}
		if st.then != nil {
			st.then(out)
		}
	}
	// The reconnect repaired the connection.
	out, code = sh(work, exports+"\ntokenbroker connections get alice")
	if code != 0 || !regexp.MustCompile(`(?m)^status:\s+active$`).MatchString(out) {
		t.Errorf("after reconnecting: exit %d\n%s", code, out)
	}
	// The dashboard answers at the address the README gives.
	resp, err := http.Get(base + "/ui/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(bytes.ToLower(page), []byte("sign in")) {
		t.Errorf("dashboard: %d\n%.300s", resp.StatusCode, page)
	}

	// Ctrl-C: an orderly shutdown exits 0.
	stopped = true
	_ = syscall.Kill(-serve.Process.Pid, syscall.SIGINT)
	select {
	case code := <-exited:
		if code != 0 || !strings.Contains(serveErr.String(), "shutdown complete") {
			t.Errorf("serve exited %d after Ctrl-C\n%s", code, serveErr)
		}
	case <-time.After(2 * time.Minute):
		_ = syscall.Kill(-serve.Process.Pid, syscall.SIGKILL)
		t.Fatal("serve did not stop after SIGINT")
	}
}

// browserConsent does what a person does with a connect link: open it,
// sign in as alice at the sandbox's consent page, click Allow, and land on
// tokenbroker's "Connected" page.
func browserConsent(t *testing.T, link, base string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: time.Minute}
	resp, err := browser.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="consent" value="([^"]+)"`).FindSubmatch(page)
	if resp.StatusCode != http.StatusOK || m == nil || !bytes.Contains(page, []byte("demo sandbox")) {
		t.Fatalf("the connect link did not show the sandbox's consent page: %d\n%.500s", resp.StatusCode, page)
	}
	// The form posts back to the page's own URL.
	resp, err = browser.PostForm(resp.Request.URL.String(), url.Values{"consent": {string(m[1])}, "user": {"alice"}, "decision": {"allow"}})
	if err != nil {
		t.Fatal(err)
	}
	page, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Request.URL.String(), base+"/v1/connect/callback") || !bytes.Contains(page, []byte("Connected")) {
		t.Fatalf("after Allow: %d at %s\n%.500s", resp.StatusCode, resp.Request.URL.Redacted(), page)
	}
}

// The test script installs packages without their recommendations and
// keeps dpkg's output out of the log (it printed ~450 lines and 130
// packages for Chromium).
func TestScriptsInstallQuietlyWithoutRecommends(t *testing.T) {
	for _, f := range []string{"../../scripts/test.sh", "../../scripts/pg.sh"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for l := range strings.SplitSeq(string(b), "\n") {
			if !strings.Contains(l, "apt-get install -") || strings.HasPrefix(strings.TrimSpace(l), "#") {
				continue
			}
			n++
			if !strings.Contains(l, "--no-install-recommends") || !strings.Contains(l, "-qq") {
				t.Errorf("%s: %q installs recommended packages or is not quiet", f, strings.TrimSpace(l))
			}
		}
		if n == 0 {
			t.Errorf("%s: no apt-get install found; update this test", f)
		}
	}
}

// A binary built with -trimpath (as the Dockerfile and release builds do)
// reports a real version from its build information, never "dev".
func TestTrimpathBuildReportsVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("needs the go command: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "tokenbroker")
	build := exec.Command(goBin, "build", "-trimpath", "-o", bin, "./cmd/tokenbroker")
	build.Dir = "../.."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -trimpath: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^tokenbroker (v\d+\.\d+\.\d+\S*|devel\S*)\n$`).Match(out) || strings.Contains(string(out), " dev\n") {
		t.Errorf("version = %q", out)
	}
	out, err = exec.Command(bin, "version", "-o", "json").Output()
	if err != nil || !strings.Contains(string(out), `"version"`) {
		t.Errorf("version -o json = %q, %v", out, err)
	}
}
