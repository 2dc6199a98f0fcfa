package logging

import (
	"strings"
	"testing"
)

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://mirror.example:5000":         "https://mirror.example:5000",
		"https://u:pw@mirror.example:5000/":   "https://xxxxx@mirror.example:5000/",
		"https://token@mirror.example":        "https://xxxxx@mirror.example",
		"http://u:pw@mirror.example:50x0/a@b": "http://xxxxx@mirror.example:50x0/a@b",
		"u:pw@mirror.example:5000":            "xxxxx@mirror.example:5000",
		"https://host/path@x":                 "https://host/path@x",
		"--registry-mirror":                   "--registry-mirror",
		"a:b@c@d.example":                     "xxxxx@d.example",
	} {
		got := RedactURL(in)
		if got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
		if strings.Contains(got, "pw") || strings.Contains(got, "token") {
			t.Errorf("RedactURL(%q) = %q shows the secret", in, got)
		}
	}
}
