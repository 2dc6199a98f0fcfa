package logging

import (
	"net/url"
	"strings"
)

// RedactURL hides the userinfo of a URL (username included: it is often a
// token), also when the URL does not parse: "https://u:pw@host:50x0" is
// refused by url.Parse with an error that quotes it, and "u:pw@host:5000"
// parses as an opaque URL of scheme "u". Text without userinfo is returned
// as it is.
func RedactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		u.User = url.User("xxxxx")
		return u.String()
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if ok {
		scheme += "://"
	} else {
		scheme, rest = "", s
	}
	authority, path, hasPath := strings.Cut(rest, "/")
	i := strings.LastIndex(authority, "@")
	if i < 0 {
		return s
	}
	out := scheme + "xxxxx" + authority[i:]
	if hasPath {
		out += "/" + path
	}
	return out
}
