package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/store"
)

func writeLines(t *testing.T, lines ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "connections.jsonl")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func importLine(id string) string {
	return fmt.Sprintf(`{"id":%q,"provider":"acme","access_token":"at-%s","refresh_token":"rt-%s","expires_in":3600}`, id, id, id)
}

func TestCLIImportJSONLines(t *testing.T) {
	e := newCLIEnv(t)
	var lines []string
	for i := range 7 {
		lines = append(lines, importLine(fmt.Sprintf("bulk-%d", i)))
		if i == 3 {
			lines = append(lines, "   ") // blank lines are skipped
		}
	}
	out := e.mustCLI(t, "import", "--batch", "3", writeLines(t, lines...))
	if !strings.Contains(out, "imported 7 connections") {
		t.Errorf("output %q, want it to count 7", out)
	}
	for i := range 7 {
		c, err := e.app.Store.GetConnection(context.Background(), fmt.Sprintf("bulk-%d", i))
		if err != nil {
			t.Fatalf("bulk-%d: %v", i, err)
		}
		if c.Version != 1 || len(c.RefreshToken) == 0 || c.NextRefreshAt.IsZero() {
			t.Errorf("bulk-%d stored as %+v", i, c)
		}
	}

	// Line 5 is wrong: the batch holding it (lines 5-6) is refused whole,
	// the batches before it stay, nothing after it is sent.
	lines = []string{
		importLine("part-1"), importLine("part-2"),
		importLine("part-3"), importLine("part-4"),
		importLine("part-5")[:len(importLine("part-5"))-1] + `,"expires_at":"2030-01-01T00:00:00Z"}`, importLine("part-6"),
		importLine("part-7"),
	}
	code, out, errOut := e.cli(t, "import", "--batch", "2", "--parallel", "1", writeLines(t, lines...))
	if code != exitFailure {
		t.Errorf("exit %d, want %d", code, exitFailure)
	}
	if !strings.Contains(errOut, "line 5:") || !strings.Contains(errOut, "expires_at") || !strings.Contains(errOut, "lines 5-6") {
		t.Errorf("stderr %q, want it to name line 5, the field and the batch's lines", errOut)
	}
	if !strings.Contains(out, "imported 4 connections") {
		t.Errorf("output %q, want 4 imported", out)
	}
	for i := 1; i <= 7; i++ {
		_, err := e.app.Store.GetConnection(context.Background(), fmt.Sprintf("part-%d", i))
		if stored := err == nil; stored != (i <= 4) {
			t.Errorf("part-%d stored = %v (err %v), want %v", i, stored, err, i <= 4)
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			t.Fatal(err)
		}
	}

	// A line that is not JSON is a usage error naming it; a taken id is
	// named by its line.
	if code, _, errOut := e.cli(t, "import", writeLines(t, importLine("x-1"), "id=x-2")); code != exitUsage || !strings.Contains(errOut, "line 2: not a JSON object") {
		t.Errorf("bad line: exit %d, stderr %q", code, errOut)
	}
	if code, _, errOut := e.cli(t, "import", writeLines(t, importLine("y-1"), importLine("bulk-3"))); code != exitFailure || !strings.Contains(errOut, "line 2:") || !strings.Contains(errOut, "already exists") {
		t.Errorf("taken id: exit %d, stderr %q", code, errOut)
	}
	if code, _, _ := e.cli(t, "import", "--batch", "1001", writeLines(t, importLine("z"))); code != exitUsage {
		t.Errorf("--batch 1001: exit %d, want %d", code, exitUsage)
	}
}
