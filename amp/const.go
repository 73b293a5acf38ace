package amp

// Wire keys and codes, as in Twisted's amp module.
const (
	KeyAsk              = "_ask"
	KeyAnswer           = "_answer"
	KeyCommand          = "_command"
	KeyError            = "_error"
	KeyErrorCode        = "_error_code"
	KeyErrorDescription = "_error_description"

	// CodeUnknown answers a command whose responder failed with an error
	// its command does not declare; Twisted closes the connection after it.
	CodeUnknown = "UNKNOWN"
	// CodeUnhandled answers a command nobody responds to.
	CodeUnhandled = "UNHANDLED"

	// DescriptionUnknown is what Twisted sends with CodeUnknown; the real
	// error stays in the server's log.
	DescriptionUnknown = "Unknown Error"
)
