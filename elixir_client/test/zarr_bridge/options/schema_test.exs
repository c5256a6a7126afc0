defmodule ZarrBridge.Options.SchemaTest do
  # Pure option checks: no sidecar, no Python.
  use ExUnit.Case, async: true

  alias ZarrBridge.Options.Schema

  @schema [
    count: {:pos_integer, nil, "how many."},
    wait: {:timeout, 5_000, "how long."},
    roots: {{:list, :dir}, [], "where."},
    mode: {{:in, [:a, :b]}, :a, "which."},
    env: {:env, [], "what."}
  ]

  test "defaults fill what is not given; given values are cast" do
    assert Schema.validate!([], @schema, "T") ==
             %{count: nil, wait: 5_000, roots: [], mode: :a, env: []}

    assert %{count: 3, wait: :infinity, roots: [root], mode: :b} =
             Schema.validate!(
               [count: 3, wait: :infinity, roots: [~c"rel"], mode: :b],
               @schema,
               "T"
             )

    assert root == Path.expand("rel")
  end

  test "a nil default accepts nil; other defaults do not" do
    assert %{count: nil} = Schema.validate!([count: nil], @schema, "T")

    assert_raise ArgumentError, ~r/invalid value for :wait: nil/, fn ->
      Schema.validate!([wait: nil], @schema, "T")
    end
  end

  test "unknown options, wrong values and non-keyword lists raise ArgumentError" do
    assert_raise ArgumentError,
                 ~r/unknown option :cont for T; known options: :count, :wait/,
                 fn ->
                   Schema.validate!([cont: 1], @schema, "T")
                 end

    assert_raise ArgumentError, ~r/:count: 0; expected a positive integer/, fn ->
      Schema.validate!([count: 0], @schema, "T")
    end

    assert_raise ArgumentError, ~r/expected one of :a, :b/, fn ->
      Schema.validate!([mode: :c], @schema, "T")
    end

    assert_raise ArgumentError, ~r/:roots/, fn ->
      Schema.validate!([roots: [""]], @schema, "T")
    end

    assert_raise ArgumentError, ~r/:env/, fn ->
      Schema.validate!([env: [{"A", 1}]], @schema, "T")
    end

    assert_raise ArgumentError, ~r/keyword list/, fn ->
      Schema.validate!([:count], @schema, "T")
    end
  end

  test "the docs list each option with its type, its doc and a default worth saying" do
    assert Schema.docs(count: {:pos_integer, nil, "how many."}) ==
             "  * `:count` (a positive integer) - how many."

    assert Schema.docs(wait: {:timeout, 5_000, "how long."}) ==
             "  * `:wait` (a non-negative integer or :infinity) - how long. Default: `5000`."
  end

  test "the Sidecar's start options are validated by its schema" do
    config = ZarrBridge.Sidecar.validate_options!(workers: 2, allowed_roots: [~c"/tmp"])

    assert %{workers: 2, allowed_roots: ["/tmp"], call_timeout: 30_000, allow_pickle: false} =
             config
  end
end
