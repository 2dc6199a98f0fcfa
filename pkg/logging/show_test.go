package logging

import "testing"

func TestShortForms(t *testing.T) {
	id := "sha256:1a2b3c4d5e6f7a8b9c0d1a2b3c4d5e6f7a8b9c0d1a2b3c4d5e6f7a8b9c0d1a2b"
	for _, c := range []struct{ in, id, digest string }{
		{id, "1a2b3c4d5e6f", "sha256:1a2b3c4d5e6f"},
		{"sha256:abc", "sha256:abc", "sha256:abc"}, // too short to be one
		{"registry:5000/team/app", "registry:5000/team/app", "registry:5000/team/app"},
		{"", "", ""},
	} {
		if got := ShortID(c.in); got != c.id {
			t.Errorf("ShortID(%q) = %q, want %q", c.in, got, c.id)
		}
		if got := ShortDigest(c.in); got != c.digest {
			t.Errorf("ShortDigest(%q) = %q, want %q", c.in, got, c.digest)
		}
	}
	if Discard().Logger.Out == nil || OrDiscard(nil) == nil {
		t.Error("no discard logger")
	}
}
