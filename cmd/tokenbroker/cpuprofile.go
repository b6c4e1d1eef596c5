package main

import (
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
)

// cpuProfileEnv names a file to write a CPU profile of the whole run to
// ("%p" in it becomes the process id), for measuring where a benchmark's
// time goes (BENCHMARKS.md, "Where the time goes"). Unset: no profiling.
const cpuProfileEnv = "TOKENBROKER_CPUPROFILE"

// withCPUProfile runs f, under the CPU profiler when path is set.
func withCPUProfile(path string, stderr io.Writer, f func() int) int {
	if path == "" {
		return f()
	}
	path = strings.ReplaceAll(path, "%p", strconv.Itoa(os.Getpid()))
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		fmt.Fprintf(stderr, "tokenbroker: %s: %v\n", cpuProfileEnv, err)
		return 1
	}
	defer out.Close()
	if err := pprof.StartCPUProfile(out); err != nil {
		fmt.Fprintf(stderr, "tokenbroker: %s: %v\n", cpuProfileEnv, err)
		return 1
	}
	defer pprof.StopCPUProfile()
	return f()
}
