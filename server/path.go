package server

import (
	"errors"
	"net/url"
	"strings"
)

// maxDecodeRounds is how many layers of percent-encoding a path segment is
// looked through. An upstream that decodes twice (some frameworks, some
// gateways) must not see a dot segment or a slash that we let through as
// %252e%252e or %252F.
const maxDecodeRounds = 3

// checkRequestPath refuses paths that are not clean, before routing: empty
// segments (other than a trailing slash), "." and ".." segments in any
// encoding, encoded slashes and backslashes, backslashes, and control
// characters. A clean path is joined under a provider's base path as is,
// so it cannot climb out of it.
func checkRequestPath(u *url.URL) error {
	escaped := u.EscapedPath()
	if !strings.HasPrefix(escaped, "/") {
		return errors.New("the path must start with /")
	}
	segs := strings.Split(escaped[1:], "/")
	for i, seg := range segs {
		if seg == "" {
			if i == len(segs)-1 {
				break // a trailing slash
			}
			return errors.New("the path has an empty segment (//)")
		}
		if _, err := checkSegment(seg); err != nil {
			return err
		}
	}
	return nil
}

// checkSegment checks one escaped path segment and returns it decoded once.
func checkSegment(seg string) (string, error) {
	first := ""
	cur := seg
	for round := 0; round < maxDecodeRounds; round++ {
		d, err := url.PathUnescape(cur)
		if err != nil {
			if round == 0 {
				return "", errors.New("the path has an invalid percent-encoding")
			}
			break // a literal % after the first decoding: nothing more to decode
		}
		if round == 0 {
			first = d
		}
		if err := checkDecoded(d); err != nil {
			return "", err
		}
		if d == cur {
			break
		}
		cur = d
	}
	return first, nil
}

func checkDecoded(d string) error {
	if strings.ContainsAny(d, `/\`) {
		return errors.New("the path has an encoded slash or a backslash")
	}
	for i := 0; i < len(d); i++ {
		if c := d[i]; c < 0x20 || c == 0x7f {
			return errors.New("the path has a control character")
		}
	}
	// Some servers read ";params" off a segment before resolving dots
	// ("..;" is ".." to Tomcat), and some trim trailing dots and spaces.
	name, _, _ := strings.Cut(d, ";")
	name = strings.TrimRight(name, " ")
	if name != "" && strings.Trim(name, ".") == "" {
		return errors.New("the path has a . or .. segment")
	}
	return nil
}
