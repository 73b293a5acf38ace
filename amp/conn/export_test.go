package conn

// NewTestBudget is NewBudget with each connection's Allowance set to own
// bytes, so that tests and fuzzing reach the budget with small boxes.
func NewTestBudget(bytes, own int64) *Budget {
	b := NewBudget(bytes)
	b.own = own
	return b
}
