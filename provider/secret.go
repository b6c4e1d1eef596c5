package provider

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

// maxSecretFileSize bounds a client secret file: anything larger is the
// wrong file.
const maxSecretFileSize = 64 << 10

// ResolveSecret returns a copy of p with ClientSecret read from the
// environment variable ClientSecretEnv or the file ClientSecretFile
// (trailing line breaks trimmed, as editors and `echo` add them). With
// neither set, p is returned unchanged: a public client (PKCE only) has no
// secret. lookupEnv is [os.LookupEnv] when nil.
//
// Errors are [*FieldError]s naming the variable or the file path, never the
// content. An unreadable file's error wraps the [fs.PathError] cause.
func (p Profile) ResolveSecret(lookupEnv func(string) (string, bool)) (Profile, error) {
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	switch {
	case p.ClientSecretEnv != "" && p.ClientSecretFile != "":
		return p, &FieldError{Provider: p.Name, Field: "client_secret_file", Problem: "set only one of client_secret_env and client_secret_file"}
	case p.ClientSecretEnv != "":
		v, ok := lookupEnv(p.ClientSecretEnv)
		switch {
		case !ok:
			return p, &FieldError{Provider: p.Name, Field: "client_secret_env", Problem: fmt.Sprintf("environment variable %s is not set", p.ClientSecretEnv)}
		case v == "":
			return p, &FieldError{Provider: p.Name, Field: "client_secret_env", Problem: fmt.Sprintf("environment variable %s is empty", p.ClientSecretEnv)}
		}
		p.ClientSecret = v
	case p.ClientSecretFile != "":
		v, err := readSecretFile(p.ClientSecretFile)
		if err != nil {
			return p, &FieldError{Provider: p.Name, Field: "client_secret_file", Problem: err.Error(), Err: err}
		}
		p.ClientSecret = v
	}
	return p, nil
}

// readSecretFile reads a secret file. Its errors name the path and the
// reason, never what was read.
func readSecretFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("cannot read %s: %w", path, pathCause(err))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFileSize+1))
	if err != nil {
		return "", fmt.Errorf("cannot read %s: %w", path, pathCause(err))
	}
	if len(b) > maxSecretFileSize {
		return "", fmt.Errorf("%s is larger than %d bytes; is it the right file?", path, maxSecretFileSize)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

// pathCause strips the path from a *fs.PathError (the message names the
// path already) but keeps it in the chain for errors.Is.
func pathCause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return &causeError{msg: pe.Err.Error(), err: err}
	}
	return err
}

type causeError struct {
	msg string
	err error
}

func (e *causeError) Error() string { return e.msg }
func (e *causeError) Unwrap() error { return e.err }
