defmodule ZarrBridge.Array do
  @moduledoc """
  A Zarr array (v2 or v3) opened or created with `ZarrBridge.open/1` or
  `ZarrBridge.create/1`.

  The struct is a handle: it names the store, the path and the sidecar, and
  holds a **snapshot** of the array's metadata taken when it was opened or
  created. Reads and writes always go to the store, so they see the current
  data. After `put_attributes/3` or `update_attributes/3` the attributes on
  disk are current, while `array.metadata.attributes` keeps the snapshot:
  use `get_attributes/2`, or `refresh/2` to take a new snapshot.

  Fields: `metadata` (`ZarrBridge.Metadata`), `storage` (`:filesystem`),
  `path` (the absolute path of the array), `mode` (the mode it was opened
  with), `server` (the sidecar), `store` (the store map sent on the wire).

  ## Data

    * `get_slice/2` and `set_slice/3` use nested tuples, as ExZarr does: a
      2-d slice is a tuple of row tuples. NaN and the infinities are
      `:nan`, `:infinity` and `:neg_infinity`; see `ZarrBridge.NDArray` for
      every dtype.
    * `read/2` and `write/3` use `ZarrBridge.NDArray` (a binary with its
      shape and dtype): the fast path for large data.

  A selection is given by `start:` and `stop:` tuples, one entry per
  dimension, half-open (`stop` excluded). A missing `start` is the origin, a
  missing `stop` the end of the array.

  ## Options

  Every function accepts `server:` (overrides the array's sidecar) and
  `timeout:` (milliseconds; default: the sidecar's). Unknown options raise
  `ArgumentError`.

  ## Errors

  `{:error, %ZarrBridge.Error{}}` with, among others: `:invalid_selection`
  (out of bounds, negative, or wrong rank), `:data_size_mismatch` (the data
  does not fill the selection exactly), `:read_only` (a write to an array
  opened with mode `:r`), `:not_found` (the array is gone),
  `:codec_unavailable`, `:timeout`.
  """

  alias ZarrBridge.{Dtype, Error, Metadata, NDArray, Sidecar}

  @enforce_keys [:metadata, :path, :store]
  defstruct [:metadata, :path, :store, storage: :filesystem, mode: :"r+", server: Sidecar]

  @type mode :: :r | :"r+" | :a | :w | :"w-"

  @type t :: %__MODULE__{
          metadata: Metadata.t(),
          storage: :filesystem,
          path: String.t(),
          mode: mode,
          server: GenServer.server(),
          store: %{required(String.t()) => String.t()}
        }

  # The array is the store's root (the seed's usage: the path is the array).
  @node ""
  @inline_limit 256 * 1024
  @handoff_threshold 1024 * 1024
  @common [:server, :timeout]

  @doc """
  Reads a slice as nested tuples.

      {:ok, data} = ZarrBridge.Array.get_slice(array, start: {0, 0}, stop: {100, 50})
      elem(elem(data, 0), 0)

  Options: `start:`, `stop:` (default: the whole array), `handoff:` (see
  `read/2`), `server:`, `timeout:`.
  """
  @spec get_slice(t, keyword) :: {:ok, term} | {:error, Error.t()}
  def get_slice(%__MODULE__{} = array, opts \\ []) do
    with {:ok, nd} <- read(array, opts), do: {:ok, NDArray.to_nested(nd)}
  end

  @doc "Like `get_slice/2`, but raises `ZarrBridge.Error`."
  @spec get_slice!(t, keyword) :: term
  def get_slice!(array, opts \\ []), do: bang(get_slice(array, opts))

  @doc """
  Writes nested tuples (or lists) into a slice.

      :ok = ZarrBridge.Array.set_slice(array, {{1, 2}, {3, 4}}, start: {0, 0}, stop: {2, 2})

  The data's shape must be exactly `stop - start`, or the result is
  `{:error, %ZarrBridge.Error{code: :data_size_mismatch}}`. Without `stop:`
  the data's shape is used; without `start:` the origin. Each element must
  fit the array's dtype (`:invalid_params` otherwise).

  Options: `start:`, `stop:`, `server:`, `timeout:`.
  """
  @spec set_slice(t, term, keyword) :: :ok | {:error, Error.t()}
  def set_slice(%__MODULE__{} = array, data, opts \\ []) do
    check_opts!(opts, [:start, :stop | @common])
    dtype = array.metadata.dtype

    with {:ok, shape, list} <- NDArray.flatten(data, dtype),
         {:ok, start} <- start(opts, tuple_size(shape)),
         :ok <- check_stop(opts, start, shape),
         {:ok, nd} <- NDArray.from_list(list, shape, dtype) do
      write_nd(array, nd, start, opts)
    end
  end

  @doc "Like `set_slice/3`, but raises `ZarrBridge.Error`."
  @spec set_slice!(t, term, keyword) :: :ok
  def set_slice!(array, data, opts \\ []), do: bang(set_slice(array, data, opts))

  @doc """
  Reads a slice as a `ZarrBridge.NDArray`: little-endian C-order bytes.

  Options:
    * `start:`, `stop:` - the selection (default: the whole array);
    * `handoff:` - `true` asks the sidecar to hand large results over in a
      shared-memory file rather than through the pipe (same host only);
      `false` never does. By default it is asked for when the result is
      1 MiB or more;
    * `server:`, `timeout:`.
  """
  @spec read(t, keyword) :: {:ok, NDArray.t()} | {:error, Error.t()}
  def read(%__MODULE__{} = array, opts \\ []) do
    check_opts!(opts, [:start, :stop, :handoff | @common])
    meta = array.metadata

    params =
      array
      |> base_params()
      |> put_tuple("start", opts[:start])
      |> put_tuple("stop", opts[:stop])
      |> put_handoff(Keyword.get(opts, :handoff, :auto), expected_bytes(meta, opts))

    case call(array, "array.read", params, nil, opts) do
      {:ok, %{"shape" => shape, "dtype" => wire} = result} when is_list(shape) ->
        # Fixed-size data comes as "data" (bin); variable-length as "values".
        data = plain_data(Map.get(result, "data") || Map.get(result, "values"))

        with {:ok, dtype} <- Dtype.from_wire(wire) do
          NDArray.new(data, List.to_tuple(shape), dtype)
        end

      {:ok, other} ->
        unexpected(other)

      {:error, %Error{}} = error ->
        error
    end
  end

  @doc "Like `read/2`, but raises `ZarrBridge.Error`."
  @spec read!(t, keyword) :: NDArray.t()
  def read!(array, opts \\ []), do: bang(read(array, opts))

  @doc """
  Writes an NDArray, or raw bytes, into the array at `start:`.

    * With a `ZarrBridge.NDArray`, its shape is the shape written; its dtype
      must be the array's (`:invalid_params` otherwise). `stop:`, if given,
      must agree (`:data_size_mismatch`).
    * With a binary (little-endian, C-order), `stop:` gives the shape; with
      no `stop:` the binary must fill the whole array.

  Data larger than 256 KiB is uploaded to the sidecar as a stream, smaller
  data travels in the request.

  Options: `start:` (default: the origin), `stop:`, `server:`, `timeout:`.
  """
  @spec write(t, NDArray.t() | binary, keyword) :: :ok | {:error, Error.t()}
  def write(array, data, opts \\ [])

  def write(%__MODULE__{} = array, %NDArray{} = nd, opts) do
    check_opts!(opts, [:start, :stop | @common])

    with :ok <- check_dtype(nd, array.metadata.dtype),
         {:ok, start} <- start(opts, tuple_size(nd.shape)),
         :ok <- check_stop(opts, start, nd.shape) do
      write_nd(array, nd, start, opts)
    end
  end

  def write(%__MODULE__{} = array, data, opts) when is_binary(data) do
    check_opts!(opts, [:start, :stop | @common])
    meta = array.metadata
    rank = tuple_size(meta.shape)

    with {:ok, start} <- start(opts, rank),
         {:ok, shape} <- binary_shape(opts, start, meta.shape),
         {:ok, nd} <- NDArray.new(data, shape, meta.dtype) do
      write_nd(array, nd, start, opts)
    end
  end

  @doc "Like `write/3`, but raises `ZarrBridge.Error`."
  @spec write!(t, NDArray.t() | binary, keyword) :: :ok
  def write!(array, data, opts \\ []), do: bang(write(array, data, opts))

  @doc """
  Replaces the array's user attributes with `attributes` (a JSON-like map;
  atom keys become strings).

      :ok = ZarrBridge.Array.put_attributes(array, %{"units" => "meters"})

  The struct's `metadata.attributes` is not changed (it is a snapshot); see
  `refresh/2`. Options: `server:`, `timeout:`.
  """
  @spec put_attributes(t, map, keyword) :: :ok | {:error, Error.t()}
  def put_attributes(%__MODULE__{} = array, attributes, opts \\ []) when is_map(attributes),
    do: attributes_call(array, "array.put_attributes", attributes, opts)

  @doc "Like `put_attributes/3`, but raises `ZarrBridge.Error`."
  @spec put_attributes!(t, map, keyword) :: :ok
  def put_attributes!(array, attributes, opts \\ []),
    do: bang(put_attributes(array, attributes, opts))

  @doc """
  Merges `attributes` into the array's user attributes (top-level keys are
  replaced, the others kept). Options: `server:`, `timeout:`.
  """
  @spec update_attributes(t, map, keyword) :: :ok | {:error, Error.t()}
  def update_attributes(%__MODULE__{} = array, attributes, opts \\ []) when is_map(attributes),
    do: attributes_call(array, "array.update_attributes", attributes, opts)

  @doc "Like `update_attributes/3`, but raises `ZarrBridge.Error`."
  @spec update_attributes!(t, map, keyword) :: :ok
  def update_attributes!(array, attributes, opts \\ []),
    do: bang(update_attributes(array, attributes, opts))

  @doc """
  Reads the array's current user attributes from the store.
  Options: `server:`, `timeout:`.
  """
  @spec get_attributes(t, keyword) :: {:ok, map} | {:error, Error.t()}
  def get_attributes(%__MODULE__{} = array, opts \\ []) do
    check_opts!(opts, @common)

    case call(array, "array.get_attributes", base_params(array), nil, opts) do
      {:ok, %{"attributes" => %{} = attributes}} -> {:ok, plain_data(attributes)}
      {:ok, other} -> unexpected(other)
      {:error, %Error{}} = error -> error
    end
  end

  @doc "Like `get_attributes/2`, but raises `ZarrBridge.Error`."
  @spec get_attributes!(t, keyword) :: map
  def get_attributes!(array, opts \\ []), do: bang(get_attributes(array, opts))

  @doc """
  Takes a new metadata snapshot (shape, attributes, …) from the store and
  returns the updated struct; the mode is kept. Options: `server:`,
  `timeout:`.
  """
  @spec refresh(t, keyword) :: {:ok, t} | {:error, Error.t()}
  def refresh(%__MODULE__{} = array, opts \\ []) do
    check_opts!(opts, @common)
    params = array |> base_params() |> Map.put("mode", "r")

    case call(array, "array.open", params, nil, opts) do
      {:ok, %{"metadata" => wire}} ->
        with {:ok, meta} <- Metadata.from_wire(wire), do: {:ok, %{array | metadata: meta}}

      {:ok, other} ->
        unexpected(other)

      {:error, %Error{}} = error ->
        error
    end
  end

  @doc "Like `refresh/2`, but raises `ZarrBridge.Error`."
  @spec refresh!(t, keyword) :: t
  def refresh!(array, opts \\ []), do: bang(refresh(array, opts))

  # ------------------------------------------------------------------

  defp attributes_call(array, method, attributes, opts) do
    check_opts!(opts, @common)

    params =
      array
      |> base_params()
      |> Map.merge(%{"mode" => write_mode(array), "attributes" => attributes})

    case call(array, method, params, nil, opts) do
      {:ok, %{"attributes" => _}} -> :ok
      {:ok, other} -> unexpected(other)
      {:error, %Error{}} = error -> error
    end
  end

  defp write_nd(_array, %NDArray{data: data, dtype: dtype}, _start, _opts) when is_list(data) do
    {:error,
     %Error{
       code: :unsupported_dtype,
       message: "writing #{inspect(dtype)} (variable-length) arrays is not supported",
       details: %{dtype: dtype}
     }}
  end

  defp write_nd(array, %NDArray{} = nd, start, opts) do
    params =
      array
      |> base_params()
      |> Map.merge(%{
        "mode" => write_mode(array),
        "start" => Tuple.to_list(start),
        "shape" => Tuple.to_list(nd.shape)
      })

    case call(array, "array.write", params, wire_data(nd), opts) do
      {:ok, %{"bytes" => _}} -> :ok
      {:ok, other} -> unexpected(other)
      {:error, %Error{}} = error -> error
    end
  end

  defp wire_data(%NDArray{data: data}), do: data

  # Writes go with mode "r+" unless the array was opened read-only: the
  # sidecar then answers `read_only`. (Re-sending "w" would re-create it.)
  defp write_mode(%__MODULE__{mode: :r}), do: "r"
  defp write_mode(%__MODULE__{}), do: "r+"

  defp base_params(array), do: %{"store" => array.store, "path" => @node}

  defp put_tuple(params, _key, nil), do: params

  defp put_tuple(params, key, tuple) when is_tuple(tuple),
    do: Map.put(params, key, Tuple.to_list(tuple))

  defp put_tuple(_params, key, other),
    do: raise(ArgumentError, "#{key} must be a tuple of integers, got: #{inspect(other)}")

  defp put_handoff(params, false, _bytes), do: params
  defp put_handoff(params, true, _bytes), do: Map.put(params, "handoff", true)

  defp put_handoff(params, :auto, bytes) when is_integer(bytes) and bytes >= @handoff_threshold,
    do: Map.put(params, "handoff", true)

  defp put_handoff(params, :auto, _bytes), do: params

  defp put_handoff(_params, other, _bytes),
    do: raise(ArgumentError, "handoff must be a boolean, got: #{inspect(other)}")

  # The size of the result, from the snapshot; nil when it cannot be known.
  defp expected_bytes(%Metadata{shape: shape, dtype: dtype}, opts) do
    rank = tuple_size(shape)
    start = opts[:start] || Tuple.duplicate(0, rank)
    stop = opts[:stop] || shape

    with n when is_integer(n) <- Dtype.itemsize(dtype),
         true <- is_tuple(start) and is_tuple(stop),
         true <- tuple_size(start) == rank and tuple_size(stop) == rank do
      [Tuple.to_list(start), Tuple.to_list(stop)]
      |> Enum.zip_with(fn [a, b] -> max(b - a, 0) end)
      |> Enum.reduce(n, &(&1 * &2))
    else
      _ -> nil
    end
  end

  defp start(opts, rank) do
    case Keyword.get(opts, :start) do
      nil ->
        {:ok, Tuple.duplicate(0, rank)}

      start when is_tuple(start) and tuple_size(start) == rank ->
        {:ok, start}

      start when is_tuple(start) ->
        {:error,
         %Error{
           code: :invalid_selection,
           message:
             "start #{inspect(start)} has rank #{tuple_size(start)}, the data has rank #{rank}",
           details: %{start: start, rank: rank}
         }}

      other ->
        raise ArgumentError, "start must be a tuple of integers, got: #{inspect(other)}"
    end
  end

  # `stop`, when given, must be exactly start + shape.
  defp check_stop(opts, start, shape) do
    case Keyword.get(opts, :stop) do
      nil ->
        :ok

      stop when is_tuple(stop) and tuple_size(stop) == tuple_size(start) ->
        expected = sub(stop, start)

        if expected == shape do
          :ok
        else
          {:error,
           %Error{
             code: :data_size_mismatch,
             message:
               "the data has shape #{inspect(shape)}, the selection #{inspect(start)}..#{inspect(stop)} " <>
                 "has shape #{inspect(expected)}",
             details: %{data_shape: shape, selection_shape: expected}
           }}
        end

      stop when is_tuple(stop) ->
        {:error,
         %Error{
           code: :invalid_selection,
           message: "start #{inspect(start)} and stop #{inspect(stop)} differ in rank",
           details: %{start: start, stop: stop}
         }}

      other ->
        raise ArgumentError, "stop must be a tuple of integers, got: #{inspect(other)}"
    end
  end

  defp binary_shape(opts, start, array_shape) do
    case Keyword.get(opts, :stop) do
      nil ->
        if Enum.all?(Tuple.to_list(start), &(&1 == 0)) do
          {:ok, array_shape}
        else
          {:error,
           %Error{
             code: :invalid_params,
             message: "writing a binary at a start other than the origin needs stop:",
             details: %{param: "stop"}
           }}
        end

      stop when is_tuple(stop) and tuple_size(stop) == tuple_size(start) ->
        shape = sub(stop, start)

        if Enum.all?(Tuple.to_list(shape), &(&1 >= 0)) do
          {:ok, shape}
        else
          {:error,
           %Error{
             code: :invalid_selection,
             message: "stop #{inspect(stop)} is before start #{inspect(start)}",
             details: %{start: start, stop: stop}
           }}
        end

      stop when is_tuple(stop) ->
        {:error,
         %Error{
           code: :invalid_selection,
           message: "start #{inspect(start)} and stop #{inspect(stop)} differ in rank",
           details: %{start: start, stop: stop}
         }}

      other ->
        raise ArgumentError, "stop must be a tuple of integers, got: #{inspect(other)}"
    end
  end

  defp sub(a, b) do
    [Tuple.to_list(a), Tuple.to_list(b)]
    |> Enum.zip_with(fn [x, y] -> x - y end)
    |> List.to_tuple()
  end

  defp check_dtype(%NDArray{dtype: dtype}, dtype), do: :ok

  defp check_dtype(%NDArray{dtype: got}, expected) do
    {:error,
     %Error{
       code: :invalid_params,
       message: "the NDArray has dtype #{inspect(got)}, the array #{inspect(expected)}",
       details: %{param: "data", expected: expected, got: got}
     }}
  end

  # Results: bins come back as {:bin, data}; str as binaries.
  defp plain_data({:bin, data}), do: data
  defp plain_data(list) when is_list(list), do: Enum.map(list, &plain_data/1)
  defp plain_data(%{} = map), do: Map.new(map, fn {k, v} -> {k, plain_data(v)} end)
  defp plain_data(other), do: other

  defp call(array, method, params, data, opts) do
    server = Keyword.get(opts, :server, array.server)
    call_opts = Keyword.take(opts, [:timeout])

    case data do
      nil ->
        Sidecar.call(server, method, params, call_opts)

      data when byte_size(data) > @inline_limit ->
        Sidecar.call(server, method, params, [{:upload, data} | call_opts])

      data ->
        Sidecar.call(server, method, Map.put(params, "data", {:bin, data}), call_opts)
    end
  end

  defp unexpected(result) do
    {:error,
     %Error{
       code: :invalid_message,
       message: "unexpected result from the sidecar: #{inspect(result, limit: 10)}",
       details: %{result: result}
     }}
  end

  defp check_opts!(opts, allowed) do
    if not Keyword.keyword?(opts),
      do: raise(ArgumentError, "expected a keyword list of options, got: #{inspect(opts)}")

    case Enum.uniq(Keyword.keys(opts)) -- allowed do
      [] ->
        :ok

      unknown ->
        raise ArgumentError, "unknown options #{inspect(unknown)}; known: #{inspect(allowed)}"
    end
  end

  defp bang(:ok), do: :ok
  defp bang({:ok, value}), do: value
  defp bang({:error, %Error{} = error}), do: raise(error)
end
