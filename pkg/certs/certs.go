// Package certs holds the one type for each kind of registry certificate a
// source can carry, shared by the request (pkg/protocol decodes it), the
// get's and check's registry client (pkg/registry) and the put's dockerd
// (pkg/daemon), so no layer copies them into a look-alike.
package certs

// CA is a PEM CA certificate trusted for one registry, an entry of
// source.ca_certs.
type CA struct {
	Domain string `json:"domain"` // the registry's host[:port]
	Cert   string `json:"cert"`   // PEM
}

// ClientCert is a PEM client certificate and key presented to one registry
// for mutual TLS, an entry of source.client_certs.
type ClientCert struct {
	Domain string `json:"domain"`
	Cert   string `json:"cert"`
	Key    string `json:"key"`
}
