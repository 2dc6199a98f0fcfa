package engine

// Secret is a BuildKit build secret, read by RUN --mount=type=secret,id=ID.
// Exactly one of Env (the variable's name) or File is set.
type Secret struct {
	ID   string
	Env  string
	File string
}
