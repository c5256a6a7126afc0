defmodule ZarrBridge.Array do
  @moduledoc """
  A Zarr array (v2 or v3) opened or created with `ZarrBridge.open/1`,
  `ZarrBridge.create/1` or `ZarrBridge.Group`.

  The struct is a handle: it names the store, the node inside it and the
  sidecar, and holds a **snapshot** of the array's metadata taken when it
  was opened or created. Reads and writes always go to the store, so they
  see the current data. After `put_attributes/3` or `update_attributes/3`
  the attributes in the store are current, while `array.metadata.attributes`
  keeps the snapshot: use `get_attributes/2`, or `refresh/2` to take a new
  snapshot. `resize/3` and `append/3` return the struct with the new
  metadata (`append_region/3` also the region it wrote). Resizes and
  appends through one sidecar are serialized per array.

  Fields: `metadata` (`ZarrBridge.Metadata`), `storage` (`:filesystem`,
  `:zip` or `:memory`), `path` (the absolute path of the directory or zip
  file, or the memory store's name), `node` (the array's path inside the
  store, `""` for the root), `mode` (the mode it was opened with), `server`
  (the sidecar), `store` (the store map sent on the wire).

  ## Data

    * `get_slice/2` and `set_slice/3` use nested tuples, as ExZarr does: a
      2-d slice is a tuple of row tuples. NaN and the infinities are
      `:nan`, `:infinity` and `:neg_infinity`; see `ZarrBridge.NDArray` for
      every dtype.
    * `read/2` and `write/3` use `ZarrBridge.NDArray` (a binary with its
      shape and dtype, or a list of binaries for `:string` and `:bytes`):
      the fast path for large data.
    * `chunk_keys/2`, `read_chunk_raw/3` and `write_chunk_raw/4` give the
      stored chunk (or shard) bytes as they are, for a Zarr implementation
      that does its own decoding.

  A selection is given by `start:` and `stop:` tuples, one entry per
  dimension, half-open (`stop` excluded), and for reads a `step:` tuple of
  positive integers. A missing `start` is the origin, a missing `stop` the
  end of the array, a missing `step` all ones.

  As in Python's slices, an entry may be `nil`: in `start` it is 0, in
  `stop` the array's extent on that axis (from the struct's metadata
  snapshot: `refresh/2` after another handle resized it), in `step` 1. So
  `start: {3, nil}, stop: {4, nil}` is row 3, every column. Entries are
  otherwise non-negative integers (`step`: positive); anything else (a
  list instead of a tuple, a tuple of another size than the array's rank,
  `:end`, a float, a negative number, a zero step) gives
  `{:error, %ZarrBridge.Error{code: :invalid_selection}}` whose message
  names the option, the axis and the value (`details`: `option`, `axis`,
  `value`); the bang variants raise it.

  ## Options

  Every function accepts `server:` (overrides the array's sidecar) and
  `timeout:` (milliseconds; default: the sidecar's). Unknown options raise
  `ArgumentError`.

  ## Errors

  `{:error, %ZarrBridge.Error{}}` with, among others: `:invalid_selection`
  (out of bounds, negative, or wrong rank), `:data_size_mismatch` (the data
  does not fill the selection exactly), `:read_only` (a write to an array
  opened with mode `:r`), `:not_found` (the array is gone, or no such
  chunk), `:codec_unavailable`, `:timeout`.
  """

  alias ZarrBridge.{Dtype, Error, Metadata, NDArray, Options, Sidecar}

  @enforce_keys [:metadata, :path, :store]
  defstruct [
    :metadata,
    :path,
    :store,
    node: "",
    storage: :filesystem,
    mode: :"r+",
    server: Sidecar
  ]

  @type mode :: :r | :"r+" | :a | :w | :"w-"

  @type t :: %__MODULE__{
          metadata: Metadata.t(),
          storage: :filesystem | :zip | :memory,
          path: String.t(),
          node: String.t(),
          mode: mode,
          server: GenServer.server(),
          store: %{required(String.t()) => String.t()}
        }

  @common [:server, :timeout]

  @doc """
  Reads a slice as nested tuples.

      iex> {:ok, array} = ZarrBridge.create(shape: {4, 6}, dtype: :int32, storage: :memory, path: "doc-get")
      iex> :ok = ZarrBridge.Array.set_slice(array, for(r <- 0..3, do: for(c <- 0..5, do: 10 * r + c)))
      iex> ZarrBridge.Array.get_slice(array, start: {0, 0}, stop: {2, 3})
      {:ok, {{0, 1, 2}, {10, 11, 12}}}
      iex> # every other row and every third column
      iex> ZarrBridge.Array.get_slice(array, step: {2, 3})
      {:ok, {{0, 3}, {20, 23}}}

  Options: `start:`, `stop:` (default: the whole array), `step:` (default:
  all ones), `handoff:` (see `read/2`), `server:`, `timeout:`.
  """
  @spec get_slice(t, keyword) :: {:ok, term} | {:error, Error.t()}
  def get_slice(%__MODULE__{} = array, opts \\ []) do
    with {:ok, nd} <- read(array, opts), do: {:ok, NDArray.to_nested(nd)}
  end

  @doc "Like `get_slice/2`, but raises `ZarrBridge.Error`."
  @spec get_slice!(t, keyword) :: term
  def get_slice!(array, opts \\ []), do: Options.bang(get_slice(array, opts))

  @doc """
  Writes nested tuples (or lists) into a slice.

      iex> {:ok, array} = ZarrBridge.create(shape: {3, 3}, dtype: :int32, storage: :memory, path: "doc-set")
      iex> ZarrBridge.Array.set_slice(array, {{1, 2}, {3, 4}}, start: {0, 0}, stop: {2, 2})
      :ok
      iex> ZarrBridge.Array.set_slice(array, {{1, 2}}, start: {0, 0}, stop: {2, 2})
      ...> |> elem(1) |> Map.fetch!(:code)
      :data_size_mismatch

  The data's shape must be exactly `stop - start`, or the result is
  `{:error, %ZarrBridge.Error{code: :data_size_mismatch}}`. Without `stop:`
  the data's shape is used; without `start:` the origin. Each element must
  fit the array's dtype (`:invalid_params` otherwise).

  Options: `start:`, `stop:`, `server:`, `timeout:`.
  """
  @spec set_slice(t, term, keyword) :: :ok | {:error, Error.t()}
  def set_slice(%__MODULE__{} = array, data, opts \\ []) do
    Options.check!(opts, [:start, :stop | @common])
    %Metadata{dtype: dtype, shape: array_shape} = array.metadata

    with {:ok, shape, list} <- NDArray.flatten(data, dtype),
         {:ok, start, stop} <- write_selection(opts, array_shape),
         :ok <- check_rank(shape, array_shape),
         :ok <- check_stop(stop, start, shape),
         {:ok, nd} <- NDArray.from_list(list, shape, dtype) do
      write_nd(array, nd, start, opts)
    end
  end

  @doc "Like `set_slice/3`, but raises `ZarrBridge.Error`."
  @spec set_slice!(t, term, keyword) :: :ok
  def set_slice!(array, data, opts \\ []), do: Options.bang(set_slice(array, data, opts))

  @doc """
  Reads a slice as a `ZarrBridge.NDArray`: little-endian C-order bytes, or
  for `:string` and `:bytes` arrays a list of binaries in C order.

  Options:
    * `start:`, `stop:`, `step:` - the selection (default: the whole array);
    * `handoff:` - `:auto` (the default) or `true` lets the sidecar hand
      a result of a fixed-size dtype over in a shared-memory file from its
      handoff threshold on; `false` keeps it on the pipe. See "Handoff" in
      `ZarrBridge.Sidecar`, the one meaning of the option;
    * `server:`, `timeout:`.
  """
  @spec read(t, keyword) :: {:ok, NDArray.t()} | {:error, Error.t()}
  def read(%__MODULE__{} = array, opts \\ []) do
    Options.check!(opts, [:start, :stop, :step, :handoff | @common])
    meta = array.metadata

    with {:ok, start} <- selection(opts, :start, meta.shape),
         {:ok, stop} <- selection(opts, :stop, meta.shape),
         {:ok, step} <- selection(opts, :step, meta.shape) do
      params =
        array
        |> base_params()
        |> put_tuple("start", start)
        |> put_tuple("stop", stop)
        |> put_tuple("step", step)
        |> put_handoff(
          Keyword.get(opts, :handoff, :auto),
          expected_bytes(meta, start, stop, step)
        )

      read_call(array, params, opts)
    end
  end

  @doc "Like `read/2`, but raises `ZarrBridge.Error`."
  @spec read!(t, keyword) :: NDArray.t()
  def read!(array, opts \\ []), do: Options.bang(read(array, opts))

  @doc """
  Writes an NDArray, or raw bytes, into the array at `start:`.

    * With a `ZarrBridge.NDArray`, its shape is the shape written; its dtype
      must be the array's (`:invalid_params` otherwise). `stop:`, if given,
      must agree (`:data_size_mismatch`). For `:string` and `:bytes` its data
      is a list of binaries (sent as the request's `values`).
    * With a binary (little-endian, C-order), `stop:` gives the shape; with
      no `stop:` the binary must fill the whole array.

  Data of at least the sidecar's handoff threshold (4 MiB by default) is
  handed over through shared memory (same host only): it is written into a
  file in `/dev/shm` that the sidecar's workers encode from directly, which
  spares the pipe. Other data larger than 256 KiB (or all of it with
  `handoff: false`, when the file cannot be written, or when handoff is not
  usable with this sidecar, see `ZarrBridge.Sidecar.handoff_usable?/1`) is
  uploaded as a stream; smaller data travels in the request. Variable-length values
  always travel in the request, so one write of them is limited by the
  sidecar's frame size (64 MiB by default): write large string arrays in
  slices.

  Options: `start:` (default: the origin), `stop:`, `handoff:` (`true`
  hands any upload over through shared memory, `false` never does; see
  `ZarrBridge.Sidecar.call/4`), `server:`, `timeout:`.
  """
  @spec write(t, NDArray.t() | binary, keyword) :: :ok | {:error, Error.t()}
  def write(array, data, opts \\ [])

  def write(%__MODULE__{} = array, %NDArray{} = nd, opts) do
    Options.check!(opts, [:start, :stop, :handoff | @common])

    with :ok <- check_dtype(nd, array.metadata.dtype),
         {:ok, start, stop} <- write_selection(opts, array.metadata.shape),
         :ok <- check_rank(nd.shape, array.metadata.shape),
         :ok <- check_stop(stop, start, nd.shape) do
      write_nd(array, nd, start, opts)
    end
  end

  def write(%__MODULE__{} = array, data, opts) when is_binary(data) do
    Options.check!(opts, [:start, :stop, :handoff | @common])
    meta = array.metadata

    with {:ok, start, stop} <- write_selection(opts, meta.shape),
         {:ok, shape} <- binary_shape(stop, start, meta.shape),
         {:ok, nd} <- NDArray.new(data, shape, meta.dtype) do
      write_nd(array, nd, start, opts)
    end
  end

  @doc "Like `write/3`, but raises `ZarrBridge.Error`."
  @spec write!(t, NDArray.t() | binary, keyword) :: :ok
  def write!(array, data, opts \\ []), do: Options.bang(write(array, data, opts))

  @doc """
  Changes the array's shape to `new_shape` (same rank) and returns the array
  with its new metadata, as zarr-python's `resize`: growing leaves the new
  region at the fill value, shrinking drops the chunks wholly outside.

      {:ok, array} = ZarrBridge.Array.resize(array, {200, 100})

  Options: `server:`, `timeout:`. Errors: `:read_only`, `:invalid_params`
  (a shape of another rank), `:not_found`.
  """
  @spec resize(t, tuple, keyword) :: {:ok, t} | {:error, Error.t()}
  def resize(%__MODULE__{} = array, new_shape, opts \\ []) do
    Options.check!(opts, @common)
    shape = shape!(new_shape, "new_shape")

    params =
      array
      |> base_params()
      |> Map.merge(%{"mode" => write_mode(array), "shape" => shape})

    metadata_result(array, call(array, "array.resize", params, nil, opts))
  end

  @doc "Like `resize/3`, but raises `ZarrBridge.Error`."
  @spec resize!(t, tuple, keyword) :: t
  def resize!(array, new_shape, opts \\ []), do: Options.bang(resize(array, new_shape, opts))

  @doc """
  Appends `data` along `axis:` (default 0) and returns the array with its
  new metadata, as zarr-python's `append`: the array grows by the data's
  length on that axis, and every other dimension of the data must equal
  the array's.

      {:ok, array} = ZarrBridge.Array.append(array, NDArray.from_list!(rows, {10, 100}, :float64))
      {:ok, array} = ZarrBridge.Array.append(array, {{1, 2}, {3, 4}}, axis: 1)

  `data` is a `ZarrBridge.NDArray` of the array's dtype, or nested tuples
  or lists (as for `set_slice/3`).

  Appends through one sidecar are serialized per array: each grows the
  array from its current extent (whatever other appends or resizes did
  before it) and writes its data at the old end, so concurrent appends
  from many processes each land in a region of their own and none is
  lost. The returned metadata is the array's right after this append; use
  `append_region/3` to learn where the data went. Appends through two
  sidecars to one array are not serialized (see `PROTOCOL.md`).

  Options: `axis:`, `handoff:` (as for `write/3`), `server:`, `timeout:`.
  Errors: `:read_only`, `:data_size_mismatch` or `:invalid_selection`
  (shapes that do not fit), `:invalid_params`, `:conflict` (another process
  changed the array's extent during the append). A failed append shrinks
  the array back to the extent it found (but not on `:conflict`: the
  extent is then the other process's).
  """
  @spec append(t, NDArray.t() | term, keyword) :: {:ok, t} | {:error, Error.t()}
  def append(%__MODULE__{} = array, data, opts \\ []) do
    with {:ok, %{array: array}} <- append_region(array, data, opts), do: {:ok, array}
  end

  @doc "Like `append/3`, but raises `ZarrBridge.Error`."
  @spec append!(t, NDArray.t() | term, keyword) :: t
  def append!(array, data, opts \\ []), do: Options.bang(append(array, data, opts))

  @doc """
  Like `append/3`, and also says where the data went: `start` and `stop`
  (tuples, one entry per dimension, `stop` excluded) are the region this
  append wrote, which is what other processes appending at the same time
  need to find their rows again.

      {:ok, %{array: array, start: start, stop: stop}} =
        ZarrBridge.Array.append_region(array, rows)

      # with 40 rows of 100 appended to an array of 1000 rows:
      # start == {1000, 0}, stop == {1040, 100}
      {:ok, ^rows} = ZarrBridge.Array.read(array, start: start, stop: stop)

  Same options and errors as `append/3`.
  """
  @spec append_region(t, NDArray.t() | term, keyword) ::
          {:ok, %{array: t, start: tuple, stop: tuple}} | {:error, Error.t()}
  def append_region(%__MODULE__{} = array, data, opts \\ []) do
    Options.check!(opts, [:axis, :handoff | @common])
    axis = Keyword.get(opts, :axis, 0)

    if not (is_integer(axis) and axis >= 0),
      do: raise(ArgumentError, "axis must be a non-negative integer, got: #{inspect(axis)}")

    with {:ok, nd} <- to_ndarray(data, array.metadata.dtype),
         :ok <- check_dtype(nd, array.metadata.dtype) do
      params =
        array
        |> base_params()
        |> Map.merge(%{
          "mode" => write_mode(array),
          "axis" => axis,
          "shape" => Tuple.to_list(nd.shape)
        })

      append_result(array, call(array, "array.append", params, nd.data, opts))
    end
  end

  @doc "Like `append_region/3`, but raises `ZarrBridge.Error`."
  @spec append_region!(t, NDArray.t() | term, keyword) :: %{array: t, start: tuple, stop: tuple}
  def append_region!(array, data, opts \\ []),
    do: Options.bang(append_region(array, data, opts))

  @doc """
  The keys of the chunks (for a sharded array: the shards) stored for the
  array, relative to the array and sorted, e.g. `["c/0/0", "c/0/1"]` (v3)
  or `["0.0", "0.1"]` (v2). Chunks never written, or deleted because they
  held only the fill value, are not listed.

  Options: `server:`, `timeout:`.
  """
  @spec chunk_keys(t, keyword) :: {:ok, [String.t()]} | {:error, Error.t()}
  def chunk_keys(%__MODULE__{} = array, opts \\ []) do
    Options.check!(opts, @common)

    case call(array, "array.chunk_keys", base_params(array), nil, opts) do
      {:ok, %{"keys" => keys}} when is_list(keys) -> {:ok, keys}
      {:ok, other} -> Options.unexpected(other)
      {:error, %Error{}} = error -> error
    end
  end

  @doc "Like `chunk_keys/2`, but raises `ZarrBridge.Error`."
  @spec chunk_keys!(t, keyword) :: [String.t()]
  def chunk_keys!(array, opts \\ []), do: Options.bang(chunk_keys(array, opts))

  @doc """
  The raw stored bytes of one chunk (or shard): encoded, exactly as in the
  store. `key_or_coords` is a key from `chunk_keys/2`, or the chunk's grid
  coordinates as a tuple (`{0, 1}`), turned into a key by the array's chunk
  key encoding (`ZarrBridge.Metadata.chunk_key/2`).

  Options: `server:`, `timeout:`. Errors: `:not_found` (no such chunk
  stored), `:forbidden_path` (a key that leaves the array).
  """
  @spec read_chunk_raw(t, String.t() | tuple, keyword) :: {:ok, binary} | {:error, Error.t()}
  def read_chunk_raw(%__MODULE__{} = array, key_or_coords, opts \\ []) do
    Options.check!(opts, @common)

    with {:ok, key} <- chunk_key(array, key_or_coords) do
      params = array |> base_params() |> Map.put("key", key)

      case call(array, "array.read_chunk_raw", params, nil, opts) do
        {:ok, %{"data" => {:bin, data}}} -> {:ok, data}
        {:ok, other} -> Options.unexpected(other)
        {:error, %Error{}} = error -> error
      end
    end
  end

  @doc "Like `read_chunk_raw/3`, but raises `ZarrBridge.Error`."
  @spec read_chunk_raw!(t, String.t() | tuple, keyword) :: binary
  def read_chunk_raw!(array, key_or_coords, opts \\ []),
    do: Options.bang(read_chunk_raw(array, key_or_coords, opts))

  @doc """
  Stores `data` as the raw bytes of one chunk (or shard), atomically and
  without decoding or checking it: it must be what the array's codecs
  produce. `key_or_coords` is as for `read_chunk_raw/3`. Large data
  travels as for `write/3`.

  Options: `handoff:` (as for `write/3`), `server:`, `timeout:`. Errors:
  `:read_only`, `:forbidden_path`.
  """
  @spec write_chunk_raw(t, String.t() | tuple, binary, keyword) :: :ok | {:error, Error.t()}
  def write_chunk_raw(%__MODULE__{} = array, key_or_coords, data, opts \\ [])
      when is_binary(data) do
    Options.check!(opts, [:handoff | @common])

    with {:ok, key} <- chunk_key(array, key_or_coords) do
      params =
        array
        |> base_params()
        |> Map.merge(%{"mode" => write_mode(array), "key" => key})

      case call(array, "array.write_chunk_raw", params, data, opts) do
        {:ok, %{}} -> :ok
        {:ok, other} -> Options.unexpected(other)
        {:error, %Error{}} = error -> error
      end
    end
  end

  @doc "Like `write_chunk_raw/4`, but raises `ZarrBridge.Error`."
  @spec write_chunk_raw!(t, String.t() | tuple, binary, keyword) :: :ok
  def write_chunk_raw!(array, key_or_coords, data, opts \\ []),
    do: Options.bang(write_chunk_raw(array, key_or_coords, data, opts))

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
    do: Options.bang(put_attributes(array, attributes, opts))

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
    do: Options.bang(update_attributes(array, attributes, opts))

  @doc """
  Reads the array's current user attributes from the store.
  Options: `server:`, `timeout:`.
  """
  @spec get_attributes(t, keyword) :: {:ok, map} | {:error, Error.t()}
  def get_attributes(%__MODULE__{} = array, opts \\ []) do
    Options.check!(opts, @common)

    case call(array, "array.get_attributes", base_params(array), nil, opts) do
      {:ok, %{"attributes" => %{} = attributes}} -> {:ok, Options.plain(attributes)}
      {:ok, other} -> Options.unexpected(other)
      {:error, %Error{}} = error -> error
    end
  end

  @doc "Like `get_attributes/2`, but raises `ZarrBridge.Error`."
  @spec get_attributes!(t, keyword) :: map
  def get_attributes!(array, opts \\ []), do: Options.bang(get_attributes(array, opts))

  @doc """
  Takes a new metadata snapshot (shape, attributes, …) from the store and
  returns the updated struct; the mode is kept. Options: `server:`,
  `timeout:`.
  """
  @spec refresh(t, keyword) :: {:ok, t} | {:error, Error.t()}
  def refresh(%__MODULE__{} = array, opts \\ []) do
    Options.check!(opts, @common)
    params = array |> base_params() |> Map.put("mode", "r")
    metadata_result(array, call(array, "array.open", params, nil, opts))
  end

  @doc "Like `refresh/2`, but raises `ZarrBridge.Error`."
  @spec refresh!(t, keyword) :: t
  def refresh!(array, opts \\ []), do: Options.bang(refresh(array, opts))

  # ------------------------------------------------------------------

  defp read_call(array, params, opts) do
    case call(array, "array.read", params, nil, opts) do
      {:ok, %{"shape" => shape, "dtype" => wire} = result} when is_list(shape) ->
        # Fixed-size data comes as "data" (bin); variable-length as "values".
        data = Options.plain(Map.get(result, "data") || Map.get(result, "values"))

        with {:ok, dtype} <- Dtype.from_wire(wire) do
          NDArray.new(data, List.to_tuple(shape), dtype)
        end

      {:ok, other} ->
        Options.unexpected(other)

      {:error, %Error{}} = error ->
        error
    end
  end

  defp metadata_result(array, result) do
    case result do
      {:ok, %{"metadata" => wire}} ->
        with {:ok, meta} <- Metadata.from_wire(wire), do: {:ok, %{array | metadata: meta}}

      {:ok, other} ->
        Options.unexpected(other)

      {:error, %Error{}} = error ->
        error
    end
  end

  defp append_result(array, result) do
    case result do
      {:ok, %{"metadata" => wire, "region" => %{"start" => start, "stop" => stop}}}
      when is_list(start) and is_list(stop) ->
        with {:ok, meta} <- Metadata.from_wire(wire) do
          {:ok,
           %{
             array: %{array | metadata: meta},
             start: List.to_tuple(start),
             stop: List.to_tuple(stop)
           }}
        end

      {:ok, other} ->
        Options.unexpected(other)

      {:error, %Error{}} = error ->
        error
    end
  end

  defp attributes_call(array, method, attributes, opts) do
    Options.check!(opts, @common)

    params =
      array
      |> base_params()
      |> Map.merge(%{"mode" => write_mode(array), "attributes" => Options.text_keys(attributes)})

    case call(array, method, params, nil, opts) do
      {:ok, %{"attributes" => _}} -> :ok
      {:ok, other} -> Options.unexpected(other)
      {:error, %Error{}} = error -> error
    end
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

    case call(array, "array.write", params, nd.data, opts) do
      {:ok, %{"bytes" => _}} -> :ok
      {:ok, other} -> Options.unexpected(other)
      {:error, %Error{}} = error -> error
    end
  end

  defp to_ndarray(%NDArray{} = nd, _dtype), do: {:ok, nd}
  defp to_ndarray(data, dtype), do: NDArray.from_nested(data, dtype)

  defp chunk_key(_array, key) when is_binary(key), do: {:ok, key}
  defp chunk_key(array, [_ | _] = key), do: chunk_key(array, text_chunk_key!(key))

  defp chunk_key(%__MODULE__{metadata: meta}, coords) when is_tuple(coords) do
    rank = tuple_size(meta.shape)

    cond do
      tuple_size(coords) != rank ->
        {:error,
         %Error{
           code: :invalid_selection,
           message:
             "chunk coordinates #{inspect(coords)} have rank #{tuple_size(coords)}, " <>
               "the array has rank #{rank}",
           details: %{coords: coords, rank: rank}
         }}

      not Enum.all?(Tuple.to_list(coords), &(is_integer(&1) and &1 >= 0)) ->
        raise ArgumentError,
              "chunk coordinates must be non-negative integers, got: #{inspect(coords)}"

      true ->
        {:ok, Metadata.chunk_key(meta, coords)}
    end
  end

  defp chunk_key(_array, other),
    do:
      raise(
        ArgumentError,
        "a chunk is a key string or a coordinates tuple, got: #{inspect(other)}"
      )

  defp text_chunk_key!(key) do
    case Options.text(key) do
      text when is_binary(text) ->
        text

      _ ->
        raise ArgumentError,
              "a chunk is a key string or a coordinates tuple, got: #{inspect(key)}"
    end
  end

  defp shape!(shape, name) when is_tuple(shape) do
    list = Tuple.to_list(shape)

    if Enum.all?(list, &(is_integer(&1) and &1 >= 0)),
      do: list,
      else:
        raise(
          ArgumentError,
          "#{name} must be a tuple of non-negative integers, got: #{inspect(shape)}"
        )
  end

  defp shape!(other, name),
    do:
      raise(
        ArgumentError,
        "#{name} must be a tuple of non-negative integers, got: #{inspect(other)}"
      )

  # Writes go with mode "r+" unless the array was opened read-only: the
  # sidecar then answers `read_only`. (Re-sending "w" would re-create it.)
  defp write_mode(%__MODULE__{mode: :r}), do: "r"
  defp write_mode(%__MODULE__{}), do: "r+"

  defp base_params(array), do: %{"store" => array.store, "path" => array.node}

  defp put_tuple(params, _key, nil), do: params
  defp put_tuple(params, key, tuple), do: Map.put(params, key, Tuple.to_list(tuple))

  defp put_handoff(params, false, _bytes), do: params
  defp put_handoff(params, true, _bytes), do: Map.put(params, "handoff", true)

  # A fixed-size result may come by handoff: the sidecar takes it from its
  # handoff threshold on (variable-length values never do).
  defp put_handoff(params, :auto, bytes) when is_integer(bytes),
    do: Map.put(params, "handoff", true)

  defp put_handoff(params, :auto, _bytes), do: params

  defp put_handoff(_params, other, _bytes),
    do: raise(ArgumentError, "handoff must be a boolean, got: #{inspect(other)}")

  defp upload_handoff(flag) when is_boolean(flag) or flag == :auto, do: flag

  defp upload_handoff(other),
    do: raise(ArgumentError, "handoff must be a boolean, got: #{inspect(other)}")

  # The size of the result, from the snapshot; nil when it cannot be known.
  defp expected_bytes(%Metadata{shape: shape, dtype: dtype}, start, stop, step) do
    rank = tuple_size(shape)
    start = start || Tuple.duplicate(0, rank)
    stop = stop || shape
    step = step || Tuple.duplicate(1, rank)

    case Dtype.itemsize(dtype) do
      n when is_integer(n) ->
        [Tuple.to_list(start), Tuple.to_list(stop), Tuple.to_list(step)]
        |> Enum.zip_with(fn [a, b, s] -> div(max(b - a, 0) + s - 1, s) end)
        |> Enum.reduce(n, &(&1 * &2))

      _ ->
        nil
    end
  end

  # The `key` option (:start, :stop or :step) checked against the array's
  # shape, with its nil entries resolved: {:ok, nil} when it is not given,
  # {:ok, tuple} or {:error, :invalid_selection}.
  defp selection(opts, key, shape) do
    rank = tuple_size(shape)

    case Keyword.get(opts, key) do
      nil ->
        {:ok, nil}

      tuple when is_tuple(tuple) and tuple_size(tuple) == rank ->
        resolve(key, Tuple.to_list(tuple), Tuple.to_list(shape), 0, [])

      tuple when is_tuple(tuple) ->
        invalid_selection(
          "#{key}: #{inspect(tuple)} has #{tuple_size(tuple)} entries, the array has rank #{rank}",
          %{option: key, value: tuple, rank: rank}
        )

      other ->
        invalid_selection(
          "#{key}: expected a tuple with one entry per dimension, got: #{inspect(other)}",
          %{option: key, value: other, rank: rank}
        )
    end
  end

  defp resolve(_key, [], [], _axis, acc), do: {:ok, acc |> Enum.reverse() |> List.to_tuple()}

  defp resolve(key, [value | values], [extent | extents], axis, acc) do
    case entry(key, value, extent) do
      {:ok, resolved} ->
        resolve(key, values, extents, axis + 1, [resolved | acc])

      :error ->
        expected =
          if key == :step,
            do: "a positive integer or nil",
            else: "a non-negative integer or nil"

        invalid_selection(
          "#{key}: axis #{axis} is #{inspect(value)}, expected #{expected}",
          %{option: key, axis: axis, value: value}
        )
    end
  end

  defp entry(:start, nil, _extent), do: {:ok, 0}
  defp entry(:stop, nil, extent), do: {:ok, extent}
  defp entry(:step, nil, _extent), do: {:ok, 1}
  defp entry(:step, value, _extent) when is_integer(value) and value > 0, do: {:ok, value}
  defp entry(:step, _value, _extent), do: :error
  defp entry(_key, value, _extent) when is_integer(value) and value >= 0, do: {:ok, value}
  defp entry(_key, _value, _extent), do: :error

  defp invalid_selection(message, details),
    do: {:error, %Error{code: :invalid_selection, message: message, details: details}}

  # A write's start (the origin when not given) and stop (nil when not given).
  defp write_selection(opts, shape) do
    with {:ok, start} <- selection(opts, :start, shape),
         {:ok, stop} <- selection(opts, :stop, shape) do
      {:ok, start || Tuple.duplicate(0, tuple_size(shape)), stop}
    end
  end

  defp check_rank(data_shape, array_shape) when tuple_size(data_shape) == tuple_size(array_shape),
    do: :ok

  defp check_rank(data_shape, array_shape) do
    invalid_selection(
      "the data has rank #{tuple_size(data_shape)} (shape #{inspect(data_shape)}), " <>
        "the array has rank #{tuple_size(array_shape)}",
      %{data_shape: data_shape, rank: tuple_size(array_shape)}
    )
  end

  # `stop`, when given, must be exactly start + shape.
  defp check_stop(nil, _start, _shape), do: :ok

  defp check_stop(stop, start, shape) do
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
  end

  defp binary_shape(nil, start, array_shape) do
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
  end

  defp binary_shape(stop, start, _array_shape) do
    shape = sub(stop, start)

    if Enum.all?(Tuple.to_list(shape), &(&1 >= 0)),
      do: {:ok, shape},
      else:
        invalid_selection(
          "stop #{inspect(stop)} is before start #{inspect(start)}",
          %{start: start, stop: stop}
        )
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

  # Fixed-size data is bytes (handed over through shared memory or uploaded
  # as a stream when large); variable-length data travels as "values": str
  # for :string, bin for :bytes.
  defp call(array, method, params, data, opts) do
    server = Keyword.get(opts, :server, array.server)
    call_opts = Keyword.take(opts, [:timeout])
    handoff = upload_handoff(Keyword.get(opts, :handoff, :auto))

    case data do
      nil ->
        Sidecar.call(server, method, params, call_opts)

      values when is_list(values) ->
        wire = if array.metadata.dtype == :bytes, do: Enum.map(values, &{:bin, &1}), else: values
        Sidecar.call(server, method, Map.put(params, "values", wire), call_opts)

      data ->
        Sidecar.call(server, method, params, [data: data, handoff: handoff] ++ call_opts)
    end
  end
end
