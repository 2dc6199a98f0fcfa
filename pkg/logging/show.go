package logging

import (
	"io"
	"strings"

	"github.com/sirupsen/logrus"
)

// Discard is a logger that writes nothing: the default of every package
// whose caller gave no logger.
func Discard() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// OrDiscard is log, or Discard when it is nil.
func OrDiscard(log *logrus.Entry) *logrus.Entry {
	if log != nil {
		return log
	}
	return Discard()
}

// shortHex is how many hex digits of a digest people are shown, as docker
// shows image IDs.
const shortHex = 12

// ShortID shows an image ID or digest as docker does, by its first 12 hex
// digits ("1a2b3c4d5e6f"); any other text is returned unchanged.
func ShortID(id string) string {
	if _, hex, ok := splitDigest(id); ok {
		return hex[:shortHex]
	}
	return id
}

// ShortDigest keeps the algorithm: "sha256:1a2b3c4d5e6f", for messages
// about blobs, where the algorithm is part of the name.
func ShortDigest(d string) string {
	if alg, hex, ok := splitDigest(d); ok {
		return alg + ":" + hex[:shortHex]
	}
	return d
}

// splitDigest splits "algorithm:hex" when d is one, with more hex digits
// than people are shown.
func splitDigest(d string) (alg, hex string, ok bool) {
	alg, hex, ok = strings.Cut(d, ":")
	notHex := func(r rune) bool { return !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') }
	return alg, hex, ok && alg != "" && len(hex) > shortHex && strings.IndexFunc(hex, notHex) < 0
}
