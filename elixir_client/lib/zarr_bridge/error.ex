defmodule ZarrBridge.Error do
  # The codes and their meanings live in one list, so that the docs, the
  # type and the wire whitelist cannot drift apart.
  @wire_codes [
    invalid_message:
      "the frame's body is not msgpack, or not a valid message shape; also returned by " <>
        "the client for a reply that breaks the protocol (stream counts that do not add up)",
    unknown_method: "no such method (details: `\"method\"`)",
    invalid_params:
      "a param is missing, unknown, or of the wrong type (details: `\"param\"`, `\"expected\"`); " <>
        "also returned by the client for params it cannot encode",
    frame_too_large:
      "a frame exceeds `max_frame_bytes` (details: `bytes`, `limit`); " <>
        "the client checks before it sends, the sidecar checks what it reads",
    overloaded: "more than `max_in_flight` requests are in flight",
    protocol_mismatch: "the client and the sidecar speak different major protocol versions",
    internal:
      "an unexpected exception in the sidecar (with `python` set); also a shared-memory " <>
        "handoff the client cannot read",
    worker_crashed: "the worker process running this request died; the pool replaces it",
    codec_unavailable: "unknown codec id, or its optional package is missing",
    codec_forbidden: "the codec can run code on decode (pickle) and was not allowed",
    invalid_codec_config: "the codec rejected its config (details: `\"key\"` when known)",
    decode_failed: "corrupt or mismatched input to a decode",
    encode_failed: "a codec failed to encode its input",
    unsupported_dtype: "a dtype the sidecar cannot handle (details: `\"dtype\"`)",
    not_found: "no array or group at the path",
    already_exists: "create with mode `w-` where a node exists",
    read_only: "a write to an array opened with mode `r`",
    invalid_selection: "out of bounds, negative, or wrong rank",
    data_size_mismatch: "the data does not fill the selection exactly",
    invalid_metadata: "the stored metadata document is corrupt or unsupported",
    store_error:
      "the store failed (I/O error, a full disk, a read-only file system, permission denied, " <>
        "a directory where a chunk should be); the message names the operation, the reason " <>
        "and the full path (details: `\"path\"`, `\"operation\"`, `\"errno\"` such as " <>
        "`\"ENOSPC\"`)",
    forbidden_path: "a path outside the allowed roots",
    too_large: "a request whose result or payload exceeds the per-request limit",
    conflict:
      "another process changed the array while the request ran: an append found its " <>
        "extent changed (details: `\"expected_shape\"`, `\"shape\"`)",
    access_denied:
      "an object store refused the credentials, or they lack the permission " <>
        "(details: `\"url\"`, `\"cause\"`); the message never shows a credential",
    no_such_bucket: "the object store's bucket or container does not exist (details: `\"url\"`)",
    store_unavailable:
      "the object store could not be reached, or kept failing (5xx, a dropped connection, " <>
        "a timeout) after the retries of idempotent requests (details: `\"url\"`, `\"cause\"`)"
  ]

  @client_codes [
    timeout: "the caller's deadline passed; the client sent `cancel` to the sidecar",
    sidecar_exited: "the sidecar died with the request pending (details: `exit_status`)",
    sidecar_unavailable:
      "the sidecar could not be started, or is waiting to restart after failures " <>
        "(details: `reason`, `retry_in_ms`; also `exit_status` 78 when its worker pool " <>
        "could not start)"
  ]

  @code_table Enum.map_join(@wire_codes ++ @client_codes, "\n", fn {code, meaning} ->
                "| `#{inspect(code)}` | #{meaning} |"
              end)

  @moduledoc """
  The error of every failed ZarrBridge call.

  Every function of the library returns `{:error, %ZarrBridge.Error{}}` on
  failure, and its bang variant raises the same struct.

  Fields:

    * `:code` - an atom from the closed set below (`t:code/0`). Match on it.
    * `:message` - a text for people.
    * `:details` - a map of machine-readable context. Details that came from
      the sidecar keep their **string** keys (`%{"param" => "ms"}`); details
      added by the client use atom keys (`%{exit_status: 137}`).
    * `:python` - `nil`, or `%{type: "ValueError", traceback: "..."}` when a
      Python exception caused the error.

  ## Codes

  The first #{length(@wire_codes)} codes are sent by the sidecar (see
  `protocol/PROTOCOL.md`, section 5); the last #{length(@client_codes)} are
  produced by the client only.

  | code | meaning |
  |---|---|
  #{@code_table}

  A code the sidecar sends that this client does not know becomes
  `:internal`, with the original string kept in `details["code"]`.
  """

  @typedoc "One of the documented error codes (see the module doc)."
  @type code ::
          unquote(
            Enum.reduce(Enum.reverse(Keyword.keys(@wire_codes ++ @client_codes)), fn code, acc ->
              quote(do: unquote(code) | unquote(acc))
            end)
          )

  @type t :: %__MODULE__{
          code: code,
          message: String.t(),
          details: map,
          python: nil | %{type: String.t(), traceback: String.t()}
        }

  defexception code: :internal, message: "", details: %{}, python: nil

  @wire_lookup Map.new(@wire_codes, fn {code, _} -> {Atom.to_string(code), code} end)

  @doc """
  Returns every documented code: the sidecar's first, then the client-side
  ones.

  ## Examples

      iex> :not_found in ZarrBridge.Error.codes()
      true
      iex> :timeout in ZarrBridge.Error.codes()
      true
  """
  @spec codes() :: [code, ...]
  def codes, do: Keyword.keys(@wire_codes ++ @client_codes)

  @doc """
  Builds the error from the error map of a sidecar response.

  The string code becomes its atom through a fixed whitelist, so a sidecar
  can never create atoms. An unknown code becomes `:internal` and is kept in
  `details["code"]`; a malformed error (not a map) becomes
  `:invalid_message`.

  ## Examples

      iex> ZarrBridge.Error.from_wire(%{"code" => "not_found", "message" => "no array at 'a'", "details" => %{"path" => "a"}})
      %ZarrBridge.Error{code: :not_found, message: "no array at 'a'", details: %{"path" => "a"}, python: nil}

      iex> ZarrBridge.Error.from_wire(%{"code" => "brand_new", "message" => "?"}).details
      %{"code" => "brand_new"}
  """
  @spec from_wire(term) :: t
  def from_wire(%{} = wire) do
    details =
      case Map.get(wire, "details") do
        %{} = details -> details
        _ -> %{}
      end

    message =
      case Map.get(wire, "message") do
        message when is_binary(message) -> message
        nil -> ""
        other -> inspect(other)
      end

    {code, details} =
      case Map.fetch(@wire_lookup, Map.get(wire, "code")) do
        {:ok, code} -> {code, details}
        :error -> {:internal, Map.put(details, "code", Map.get(wire, "code"))}
      end

    %__MODULE__{code: code, message: message, details: details, python: python(wire)}
  end

  def from_wire(other) do
    %__MODULE__{
      code: :invalid_message,
      message: "the sidecar sent a malformed error: " <> inspect(other, limit: 20),
      details: %{"error" => other}
    }
  end

  defp python(wire) do
    case {Map.get(wire, "python_type"), Map.get(wire, "traceback")} do
      {nil, nil} -> nil
      {type, traceback} -> %{type: string_or_empty(type), traceback: string_or_empty(traceback)}
    end
  end

  defp string_or_empty(s) when is_binary(s), do: s
  defp string_or_empty(_), do: ""

  @doc """
  A readable one-line description: the code, the message and, when Python
  raised, the exception type.

  ## Examples

      iex> Exception.message(%ZarrBridge.Error{code: :timeout, message: "no reply within 100 ms"})
      "timeout: no reply within 100 ms"

      iex> Exception.message(%ZarrBridge.Error{code: :internal, message: "boom", python: %{type: "ValueError", traceback: ""}})
      "internal: boom (Python ValueError)"
  """
  @impl true
  @spec message(t) :: String.t()
  def message(%__MODULE__{code: code, message: message, python: python}) do
    text =
      case message do
        m when m in [nil, ""] -> Atom.to_string(code)
        m -> "#{code}: #{m}"
      end

    case python do
      %{type: type} when type != "" -> "#{text} (Python #{type})"
      _ -> text
    end
  end
end
