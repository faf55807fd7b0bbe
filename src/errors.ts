// Error kinds that map one-to-one onto the wire error codes of PROTOCOL §5.
// A BackendError is created where the failure is understood and carries its code.

/** `job_error.error_code` values (PROTOCOL §5). */
export type ErrorCode =
  | "out_of_capacity"
  | "model_not_loaded"
  | "backend_unreachable"
  | "backend_timeout"
  | "auth_rejected_by_backend"
  | "internal";

/**
 * A job failure with its wire code decided at the point of failure.
 *
 * @example
 * ```ts
 * throw new BackendError("backend_unreachable", "connection refused", { cause: err });
 * ```
 */
export class BackendError extends Error {
  override name = "BackendError";
  constructor(readonly code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
  }
}
