package layerstore

import (
	"strings"
	"testing"
)

// TestChainID: the layer store's keys, as dockerd computes them
// (layer.CreateChainID): a known answer for two layers.
func TestChainID(t *testing.T) {
	a := "sha256:" + strings.Repeat("a", 64)
	b := "sha256:" + strings.Repeat("b", 64)
	if got := ChainID("", a); got != a {
		t.Errorf("bottom layer's chain ID %s, want its diff ID %s", got, a)
	}
	if got, want := ChainID(a, b), digestOf([]byte(a+" "+b)); got != want {
		t.Errorf("chain ID %s, want %s", got, want)
	}
}
