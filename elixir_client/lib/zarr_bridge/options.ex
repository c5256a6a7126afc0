defmodule ZarrBridge.Options do
  @moduledoc false
  # Option checks shared by ZarrBridge, ZarrBridge.Array and ZarrBridge.Group:
  # one place turns `storage:`/`path:`/`node:` into the wire store map
  # (protocol/PROTOCOL.md §7 and §8), and checks keyword lists, modes and
  # results. Every check raises ArgumentError for a caller's mistake.

  alias ZarrBridge.{Error, Sidecar}

  @storages [:filesystem, :zip, :memory]

  @type storage :: :filesystem | :zip | :memory

  @doc "The storages there are."
  @spec storages() :: [storage]
  def storages, do: @storages

  @doc """
  Raises unless `opts` is a keyword list whose keys are all in `allowed`;
  `what` names the entries in the message ("option" by default).
  """
  @spec check!(term, [atom], String.t()) :: :ok
  def check!(opts, allowed, what \\ "option") do
    if not (is_list(opts) and Keyword.keyword?(opts)),
      do: raise(ArgumentError, "expected a keyword list of #{what}s, got: #{inspect(opts)}")

    case Enum.uniq(Keyword.keys(opts)) -- allowed do
      [] ->
        :ok

      unknown ->
        raise ArgumentError, "unknown #{what}s #{inspect(unknown)}; known: #{inspect(allowed)}"
    end
  end

  @doc """
  Text given as an Erlang string (a charlist, e.g. `"data"` in the Erlang
  shell or `~c"data"` in Elixir) as an Elixir string; anything else, a
  string included, as it is. The one place where the public API accepts
  charlists for paths, names, modes and keys.
  """
  @spec text(term) :: term
  defdelegate text(term), to: ZarrBridge.Options.Schema

  @doc """
  `{storage, path, store}` from `storage:` (default `:filesystem`) and
  `path:` (required): a directory or zip file (expanded to an absolute
  path), or the name of a memory store.
  """
  @spec store!(keyword) :: {storage, String.t(), map}
  def store!(opts) do
    storage = Keyword.get(opts, :storage, :filesystem)

    if storage not in @storages,
      do:
        raise(
          ArgumentError,
          "storage must be one of #{inspect(@storages)}, got: #{inspect(storage)}"
        )

    path =
      case Keyword.fetch(opts, :path) |> fetched_text() do
        {:ok, path} when is_binary(path) and path != "" ->
          path

        {:ok, other} ->
          raise ArgumentError, "path must be a non-empty string, got: #{inspect(other)}"

        :error ->
          raise ArgumentError, "the :path option is required"
      end

    case storage do
      :memory ->
        {storage, path, %{"kind" => "memory", "name" => path}}

      kind ->
        path = Path.expand(path)
        {storage, path, %{"kind" => Atom.to_string(kind), "path" => path}}
    end
  end

  @doc """
  The node path inside the store from `node:` (default `""`, the store's
  root): leading and trailing `/` are dropped, empty parts too. A `..` part
  is left for the sidecar to refuse (`:forbidden_path`).
  """
  @spec node!(keyword) :: String.t()
  def node!(opts) do
    case opts |> Keyword.get(:node, "") |> node_text() do
      node when is_binary(node) -> normalize_node(node)
      other -> raise ArgumentError, "node must be a string, got: #{inspect(other)}"
    end
  end

  @doc "Normalises a node path (see `node!/1`)."
  @spec normalize_node(String.t()) :: String.t()
  def normalize_node(node), do: node |> String.split("/", trim: true) |> Enum.join("/")

  @doc "The path of child `name` of the node `parent`."
  @spec join_node(String.t(), String.t()) :: String.t()
  def join_node(parent, name) when is_list(name) and name != [],
    do: join_node(parent, text(name))

  def join_node(parent, name) when is_binary(name) do
    case normalize_node(name) do
      "" -> raise ArgumentError, "a member name must be a non-empty string, got: #{inspect(name)}"
      name -> normalize_node(parent <> "/" <> name)
    end
  end

  def join_node(_parent, name),
    do: raise(ArgumentError, "a member name must be a string, got: #{inspect(name)}")

  @doc "The mode atom for `mode` (an atom or string among `allowed`)."
  @spec mode!(term, [atom]) :: atom
  def mode!(mode, allowed) do
    mode = text(mode)
    found = Enum.find(allowed, &(&1 == mode or Atom.to_string(&1) == mode))
    found || raise ArgumentError, "mode must be one of #{inspect(allowed)}, got: #{inspect(mode)}"
  end

  @doc "The `zarr_version:` option (2 or 3)."
  @spec zarr_version!(keyword, 2 | 3) :: 2 | 3
  def zarr_version!(opts, default) do
    case Keyword.get(opts, :zarr_version, default) do
      format when format in [2, 3] -> format
      other -> raise ArgumentError, "zarr_version must be 2 or 3, got: #{inspect(other)}"
    end
  end

  @doc "The `attributes:` option, a map (atom keys become strings on the wire)."
  @spec attributes!(term) :: map
  def attributes!(attrs) when is_map(attrs) and not is_struct(attrs), do: text_keys(attrs)

  def attributes!(other),
    do: raise(ArgumentError, "attributes must be a map, got: #{inspect(other)}")

  @doc """
  A JSON-like map whose keys given as charlists become strings, at every
  depth (values are left alone: a list of small integers is a list).
  """
  @spec text_keys(term) :: term
  def text_keys(%{} = map) when not is_struct(map),
    do: Map.new(map, fn {k, v} -> {text(k), text_keys(v)} end)

  def text_keys(list) when is_list(list), do: Enum.map(list, &text_keys/1)
  def text_keys(other), do: other

  # The empty charlist is the empty string: the store's root.
  defp node_text([]), do: ""
  defp node_text(node), do: text(node)

  defp fetched_text({:ok, value}), do: {:ok, text(value)}
  defp fetched_text(:error), do: :error

  @doc "The sidecar from `server:` (default `ZarrBridge.Sidecar`)."
  @spec server(keyword, GenServer.server()) :: GenServer.server()
  def server(opts, default \\ Sidecar), do: Keyword.get(opts, :server, default)

  @doc "The options `ZarrBridge.Sidecar.call/4` takes from `opts`."
  @spec call_opts(keyword) :: keyword
  def call_opts(opts), do: Keyword.take(opts, [:timeout])

  @doc "Bins in a result come back as `{:bin, data}`: unwraps them, deeply."
  @spec plain(term) :: term
  def plain({:bin, data}), do: data
  def plain(list) when is_list(list), do: Enum.map(list, &plain/1)
  def plain(%{} = map), do: Map.new(map, fn {k, v} -> {k, plain(v)} end)
  def plain(other), do: other

  @doc "The error for a result of an unexpected shape."
  @spec unexpected(term) :: {:error, Error.t()}
  def unexpected(result) do
    {:error,
     %Error{
       code: :invalid_message,
       message: "unexpected result from the sidecar: #{inspect(result, limit: 10)}",
       details: %{result: result}
     }}
  end

  @doc "`{:ok, value}` -> value, `:ok` -> `:ok`, `{:error, e}` -> raise e."
  @spec bang(:ok | {:ok, term} | {:error, Error.t()}) :: term
  def bang(:ok), do: :ok
  def bang({:ok, value}), do: value
  def bang({:error, %Error{} = error}), do: raise(error)
end
