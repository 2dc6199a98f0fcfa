package testenv

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// WriteSection puts body into the markdown file path between the lines
// "<!-- name -->" and "<!-- /name -->", replacing what was there and
// keeping the rest of the file: several benchmarks share one page
// (docs/benchmarks.md), each rewriting only its own part. A section not
// yet in the file is appended to it; a missing file is made.
func WriteSection(path, name, body string) error {
	open, end := "<!-- "+name+" -->", "<!-- /"+name+" -->"
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	text := string(old)
	section := open + "\n" + strings.Trim(body, "\n") + "\n" + end
	i := strings.Index(text, open)
	j := strings.Index(text, end)
	switch {
	case i < 0 && j < 0:
		if text != "" {
			text = strings.TrimRight(text, "\n") + "\n\n"
		}
		text += section + "\n"
	case i < 0 || j < i:
		return fmt.Errorf("%s: the markers of section %q are not in order (%q before %q)", path, name, open, end)
	default:
		text = text[:i] + section + text[j+len(end):]
	}
	return os.WriteFile(path, []byte(text), 0o644)
}
