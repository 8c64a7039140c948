"""The one error type services raise; the consumer and views turn it into
the protocol's error frame or a form error."""


class ServiceError(Exception):
    def __init__(self, code, message, **extra):
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra
